// A small HTTP server for test pods: answers /healthz with "ok" (and / with a greeting),
// logs at start the length of its projected service-account token (or that it has none),
// and on SIGTERM logs it and shuts down gracefully. With -cat it prints a file and exits
// instead (the image has no shell: for `kubectl exec POD -- /hello -cat FILE`).
//
//	hello [-listen 127.0.0.1:8080] [-token PATH] [-grace 1s]
//	hello -cat FILE
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	token := flag.String("token", "/var/run/secrets/kubernetes.io/serviceaccount/token", "service-account token to report")
	grace := flag.Duration("grace", time.Second, "how long to keep serving after SIGTERM")
	cat := flag.String("cat", "", "print this file and exit")
	flag.Parse()
	if *cat != "" {
		data, err := os.ReadFile(*cat)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Stdout.Write(data)
		return
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds | log.LUTC)

	if data, err := os.ReadFile(*token); err != nil {
		log.Printf("token: none (%v)", err)
	} else {
		log.Printf("token: %d bytes", len(data))
	}
	if ns, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
		log.Printf("namespace: %s", ns)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		host, _ := os.Hostname()
		fmt.Fprintf(w, "hello from %s (pid %d, uid %d)\n", host, os.Getpid(), os.Getuid())
	})
	server := &http.Server{Addr: *listen, Handler: mux}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-signals
		log.Printf("received %v, shutting down in %v", s, *grace)
		time.Sleep(*grace)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(ctx)
	}()

	log.Printf("listening on %s (uid %d)", *listen, os.Getuid())
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
	log.Printf("stopped")
}
