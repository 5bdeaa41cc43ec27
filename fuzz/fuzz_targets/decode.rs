//! Any bytes as a provider answer: decoding into every wire type answers a value or an error,
//! never a panic, and a host page never holds more hosts than items.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rentedhost_operator::provider::wire::{Envelope, TokenData};
use rentedhost_operator::provider::{Host, HostPage, Image, Package};
use serde_json::Value;

fuzz_target!(|bytes: &[u8]| {
    let _ = serde_json::from_slice::<Envelope>(bytes);
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    let _ = serde_json::from_value::<TokenData>(value.clone());
    let _ = serde_json::from_value::<Vec<Image>>(value.clone());
    let _ = serde_json::from_value::<Vec<Package>>(value.clone());
    if let Ok(page) = serde_json::from_value::<HostPage>(value.clone()) {
        assert!(page.data.len() <= page.items);
    }
    if let Ok(host) = serde_json::from_value::<Host>(value) {
        let _ = host.host_status();
        let _ = format!("{host:?}");
    }
});
