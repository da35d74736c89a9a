//! Types and parsers shared by the kernel side (the BPF programs in `classifier-ebpf`) and
//! the user side (the `classifier` daemon and its tests).
//!
//! Everything here is `no_std`, `#[repr(C)]` where it crosses the kernel boundary, and free
//! of allocation, so one implementation is unit-tested on the host and runs in the kernel.
#![no_std]

#[cfg(any(test, feature = "test-util"))]
extern crate std;

pub mod classify;
pub mod config;
pub mod domain;
pub mod event;
pub mod flow;
pub mod host_name;
pub mod maps;
pub mod names;
pub mod nat;
pub mod parse;
pub mod policy;
pub mod programs;
pub mod shaping;
pub mod stats;
pub mod stream;

#[cfg(any(test, feature = "test-util"))]
pub mod testing;
#[cfg(feature = "user")]
mod user;
