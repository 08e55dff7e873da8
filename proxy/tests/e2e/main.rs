//! End-to-end tests: camsim and the proxy in-process on loopback, spoken to over HTTP.

mod auth;
mod cache;
mod cli;
mod common;
mod delivery;
mod frame;
mod lifecycle;
mod limits;
mod links;
mod metrics;
mod origin;
mod path;
mod rendition;
mod stream;
mod tier;
mod tls;
