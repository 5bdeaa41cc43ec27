//! What a huge provider answer costs the operator's memory (issue 22, finding 8), measured
//! by a counting allocator in a test binary of its own (no other test allocates meanwhile).

use rentedhost_operator::provider::{ClientSettings, CreateRent, Credentials, ProviderClient};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use xds_simulator::Endpoint;
use xds_simulator::{Fault, Simulator, catalogue::DEMO_ACCOUNT};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn a_64_mib_answer_costs_at_most_a_few_mib() {
    let sim = Simulator::default();
    let (addr, _) = sim.serve(0).await.unwrap();
    let settings = ClientSettings {
        base_url: format!("http://{addr}"),
        timeout: Duration::from_secs(10),
        requests_per_second: 1000.0,
        burst: 1000,
        concurrency: 8,
    };
    let client = ProviderClient::new(
        settings,
        Credentials::new(DEMO_ACCOUNT.0, DEMO_ACCOUNT.1),
        None,
    );
    // Token, connection and buffers first: the floor the huge answers are measured from.
    client.all_hosts().await.unwrap();
    let floor = CURRENT.load(Ordering::Relaxed);
    PEAK.store(floor, Ordering::Relaxed);
    for endpoint in [Endpoint::MyPage, Endpoint::CreateRent, Endpoint::Image] {
        sim.inject(endpoint, [Fault::HugeBody(64 * MIB)]);
    }
    assert!(client.all_hosts().await.is_err());
    let create = CreateRent {
        package_id: "teTapaSUFq".into(),
        image_id: "507".into(),
        period_number: 1,
        period_type: 3,
    };
    assert!(
        client
            .create_rent(&create, &Default::default())
            .await
            .is_err()
    );
    assert!(client.images().await.is_err());
    let grew = PEAK.load(Ordering::Relaxed).saturating_sub(floor);
    println!(
        "three 64 MiB answers: peak {:.1} MiB above the floor ({:.1} MiB); the largest limit is 2 MiB",
        grew as f64 / MIB as f64,
        floor as f64 / MIB as f64
    );
    assert!(
        grew < 8 * MIB,
        "a huge answer took {grew} bytes (limit 2 MiB per answer)"
    );
}
