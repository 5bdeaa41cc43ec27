//! The container image (`make image`) as a cluster runs it: its root filesystem unpacked from
//! the OCI layout, the process started in it as uid 65532 with the chart Deployment's own
//! arguments and environment, the ServiceAccount's token and CA where the kubelet mounts
//! them and `KUBERNETES_SERVICE_HOST/PORT` set, so that in-cluster configuration is what
//! connects. A RentedHost reaches Ready and its host is released on delete.

use crate::support::process::{
    Process, apply_example_until_ready, chart_values, delete_example, free_port, install_chart,
    ready_within, simulator,
};
use crate::support::{install_crd, run_ok};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn layout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/image/oci")
}

fn blob(digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    layout().join("blobs/sha256").join(hex)
}

fn json_blob(digest: &str) -> Value {
    serde_json::from_slice(&std::fs::read(blob(digest)).unwrap()).unwrap()
}

/// The image's config, and its layers unpacked into a new directory.
fn unpack() -> (Value, tempfile::TempDir) {
    let index = layout().join("index.json");
    let index: Value = serde_json::from_slice(&std::fs::read(&index).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run `make image` (or `make test`, which builds it)",
            index.display()
        )
    }))
    .unwrap();
    let manifest = json_blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = json_blob(manifest["config"]["digest"].as_str().unwrap());
    let rootfs = tempfile::tempdir().unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let path = blob(layer["digest"].as_str().unwrap());
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(Some(size), layer["size"].as_u64(), "the manifest's size");
        run_ok(
            Command::new("tar")
                .arg("-xzf")
                .arg(&path)
                .arg("-C")
                .arg(rootfs.path()),
        );
    }
    (config, rootfs)
}

fn host_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH (util-linux)"))
}

fn files(root: &Path) -> Vec<String> {
    let out = run_ok(
        Command::new("find")
            .arg(".")
            .arg("-type")
            .arg("f")
            .current_dir(root),
    );
    let mut files: Vec<String> = out.lines().map(str::to_string).collect();
    files.sort();
    files
}

#[tokio::test]
async fn the_image_runs_in_cluster_as_the_charts_deployment_would() {
    let (config, rootfs) = unpack();
    let image = &config["config"];
    assert_eq!(image["User"], "65532:65532", "non-root");
    assert_eq!(
        image["Entrypoint"],
        serde_json::json!(["/rentedhost-operator"])
    );
    assert_eq!(
        files(rootfs.path()),
        [
            "./etc/group",
            "./etc/passwd",
            "./etc/ssl/certs/ca-certificates.crt",
            "./rentedhost-operator"
        ],
        "the binary, CA certificates and passwd: no shell"
    );
    // The simulator is a crate of its own: no demo credentials, no fault injection, no
    // `simulate` in the image's binary.
    let binary = rootfs.path().join("rentedhost-operator");
    let text = std::fs::read(&binary).unwrap();
    for needle in ["demo-secret", "connection dropped by fault injection"] {
        assert!(
            !text.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "the image's binary carries the simulator ({needle:?})"
        );
    }
    let simulate = Command::new(&binary).arg("simulate").output().unwrap();
    assert!(!simulate.status.success(), "`simulate` is not a command");

    let plane = install_crd();
    let client = plane.client().await;
    let ns = crate::support::test_namespace(&client, "image").await;
    let hosts = crate::support::test_namespace(&client, "image-hosts").await;
    let (_sim, sim_port) = simulator().await;
    let http_port = free_port();
    let deployment = install_chart(plane, &ns, &chart_values(sim_port, http_port, &hosts));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "rentedhost-operator:0.1.0");
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
    let pod_name = "rho-rentedhost-operator-7d9f8-abcde";
    // The Deployment's environment, its field references resolved as the kubelet would.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap().to_string();
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => pod_name.to_string(),
            Some("metadata.namespace") => ns.clone(),
            Some(other) => panic!("unexpected field reference {other}"),
            None => var["value"].as_str().unwrap_or_default().to_string(),
        };
        env.insert(name, value);
    }
    // And the image's, and what the kubelet adds for in-cluster configuration.
    for var in image["Env"].as_array().unwrap() {
        let (name, value) = var.as_str().unwrap().split_once('=').unwrap();
        env.insert(name.into(), value.into());
    }
    let kubeconfig = std::fs::read_to_string(plane.kubeconfig()).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .unwrap();
    let (host, port) = server.split_once(':').unwrap();
    env.insert("KUBERNETES_SERVICE_HOST".into(), host.into());
    env.insert("KUBERNETES_SERVICE_PORT".into(), port.into());

    // The ServiceAccount's token and the cluster's CA, where the kubelet mounts them.
    let token = run_ok(plane.kubectl().args([
        "create",
        "token",
        "rho-rentedhost-operator",
        "-n",
        &ns,
        "--duration=1h",
    ]));
    let mount = rootfs
        .path()
        .join("var/run/secrets/kubernetes.io/serviceaccount");
    std::fs::create_dir_all(&mount).unwrap();
    std::fs::write(mount.join("token"), token.trim()).unwrap();
    std::fs::copy(plane.root().join("ca.crt"), mount.join("ca.crt")).unwrap();
    std::fs::write(mount.join("namespace"), &ns).unwrap();

    // The devices every container runtime creates (the OCI runtime spec's defaults): a
    // static binary draws its randomness from /dev/urandom.
    let dev = rootfs.path().join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    for (name, minor) in [
        ("null", 3),
        ("zero", 5),
        ("full", 7),
        ("random", 8),
        ("urandom", 9),
    ] {
        run_ok(
            Command::new(host_program("mknod"))
                .args(["-m", "666"])
                .arg(dev.join(name))
                .args(["c", "1", &minor.to_string()]),
        );
    }

    let log = tempfile::NamedTempFile::new().unwrap();
    let entrypoint = image["Entrypoint"][0].as_str().unwrap();
    let operator = Process(
        // By path: the child's environment is the container's, whose PATH is not the host's.
        Command::new(host_program("unshare"))
            .arg(format!("--root={}", rootfs.path().display()))
            .args(["--wd=/", "--setuid=65532", "--setgid=65532", entrypoint])
            .args(&args)
            .env_clear()
            .envs(&env)
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    let logs = || std::fs::read_to_string(log.path()).unwrap();
    let readyz = format!("http://127.0.0.1:{http_port}/readyz");
    let ready = ready_within(&readyz, Duration::from_secs(30)).await;
    assert!(ready, "{readyz} not ready; the image's log:\n{}", logs());
    let ready = apply_example_until_ready(plane, &hosts);
    assert!(ready, "not Ready; the image's log:\n{}", logs());
    // The process runs as uid 65532, and this is its memory at rest with one object.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", operator.0.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(field("Uid:"), "65532");
    println!(
        "image process: uid {}, VmRSS {} kB with one object",
        field("Uid:"),
        field("VmRSS:")
    );

    delete_example(plane, &hosts, sim_port).await;
    let logs = logs();
    assert!(logs.contains("\"level\":\"INFO\""), "JSON logs: {logs}");
    assert!(!logs.contains("demo-secret"), "no secret in the logs");
    run_ok(plane.helm().args(["uninstall", "rho", "-n", &ns]));
}

/// The SBOM beside the image (`make image`): the binary's crates, named by the image's
/// manifest digest, with nothing of this machine in it.
#[test]
fn the_images_sbom_lists_the_crates_compiled_into_the_binary() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/image/rentedhost-operator.cdx.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}: run `make image`", path.display()));
    let sbom: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["specVersion"], "1.5");
    assert_eq!(sbom["metadata"]["component"]["name"], "rentedhost-operator");
    assert_eq!(
        sbom["metadata"]["component"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout().join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap();
    let hex = manifest.strip_prefix("sha256:").unwrap();
    let serial = sbom["serialNumber"].as_str().unwrap().replace('-', "");
    assert_eq!(
        serial,
        format!("urn:uuid:{}", &hex[..32]),
        "named by the manifest"
    );
    let names: Vec<&str> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for shipped in [
        "kube-client",
        "k8s-openapi",
        "tokio",
        "reqwest",
        "rustls",
        "ring",
        "serde",
    ] {
        assert!(names.contains(&shipped), "{shipped} in {names:?}");
    }
    for not_shipped in ["proptest", "tempfile", "rcgen", "cc"] {
        assert!(
            !names.contains(&not_shipped),
            "{not_shipped} is not in the binary"
        );
    }
    for local in [env!("CARGO_MANIFEST_DIR"), ".cargo/registry"] {
        assert!(!text.contains(local), "{local} in the SBOM");
    }
    assert!(text.contains("\"timestamp\": \"1970-01-01T00:00:00Z\""));
}
