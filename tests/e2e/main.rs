//! End-to-end tests against a real kube-apiserver and etcd (see `support::control_plane`).

mod support;

mod budgets;
mod chaos;
mod chart;
mod controls;
mod create;
mod fallback;
mod harness;
mod helm;
mod image;
mod leaks;
mod lifecycle;
mod money;
mod node;
mod observe;
mod operations;
mod pools;
mod protocol;
mod secrets;
mod telling;
mod upgrade;
mod validation;
