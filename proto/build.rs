//! Generates the tonic clients and servers from `proto/*.proto`.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate so that a fresh machine, CI and
//! the Docker build need nothing installed by hand.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(match env::var_os("PROTOC") {
        Some(protoc) => PathBuf::from(protoc),
        None => protoc_bin_vendored::protoc_bin_path()?,
    });
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("shop_descriptor.bin"))
        .compile_with_config(
            config,
            &["proto/inventory.proto", "proto/order.proto"],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
