//! The simulator's default accounts, packages and images.

use crate::wire::{Image, Package};

/// Account id and secret of the account every simulator starts with.
pub const DEMO_ACCOUNT: (&str, &str) = ("demo-account", "demo-secret");

pub fn packages() -> Vec<Package> {
    let package = |id: &str,
                   name: &str,
                   gpu: i64,
                   gpu_name: Option<&str>,
                   cpu: i64,
                   memory: i64,
                   disk: i64,
                   type_: &str,
                   use_type: &str,
                   amount: &str| Package {
        package_id: Some(id.into()),
        name: Some(name.into()),
        gpu_number: Some(gpu),
        gpu_name: gpu_name.map(Into::into),
        memory_number: Some(memory),
        rigid_disk_number: Some(disk),
        cpu_number: Some(cpu),
        band_width: Some(50),
        amount: Some(amount.into()),
        discount: Some("1".into()),
        type_: Some(type_.into()),
        pve_machine_type: Some(if gpu > 0 { "1" } else { "0" }.into()),
        area: Some("0".into()),
        use_type: Some(use_type.into()),
    };
    let mut packages = vec![
        package(
            "teTapaSUFq",
            "RTX 4090 x1",
            1,
            Some("RTX 4090"),
            8,
            32,
            128,
            "ceph",
            "2",
            "2.5",
        ),
        package(
            "kQvBmLtRzA",
            "Office 4C16G",
            0,
            None,
            4,
            16,
            128,
            "ceph",
            "1",
            "0.4",
        ),
        package(
            "pLnBaRexWq",
            "Compute 16C64G",
            0,
            None,
            16,
            64,
            512,
            "BL",
            "2",
            "1.2",
        ),
        package(
            "hOuRlYoNly",
            "Pay-as-you-go 2C8G",
            0,
            None,
            2,
            8,
            64,
            "ceph",
            "0",
            "0.2",
        ),
    ];
    // The demo package is on sale: its hourly price is amount × discount.
    packages[0].discount = Some("0.8".into());
    packages
}

pub fn images() -> Vec<Image> {
    let image = |id: &str, type_: &str, name: &str, version: &str| Image {
        image_id: Some(id.into()),
        type_: Some(type_.into()),
        system_image_name: Some(name.into()),
        system_image_version: Some(version.into()),
    };
    vec![
        image("507", "ceph", "Windows", "10 x64"),
        image("508", "ceph", "Ubuntu Desktop", "22.04 x64"),
        image("4005", "BL", "Ubuntu Server", "20.04 x64"),
    ]
}
