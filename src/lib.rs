//! rentedhost-operator: rents prepaid hosts from the Xuandashi cloud for `RentedHost` objects.

pub mod account;
pub mod api;
pub mod budget;
pub mod config;
pub mod controller;
pub mod crd_check;
pub mod http;
pub mod kit;
pub mod kube_client;
pub mod leader;
pub mod metrics;
pub mod operator;
pub mod pool;
pub mod provider;
pub mod readiness;
pub mod telemetry;
