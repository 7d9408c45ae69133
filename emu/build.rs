//! The cdylib's soname is `libcuda.so`: once the CUDA backend has loaded this library
//! by path, the dynamic loader hands it out for cudarc's `dlopen("libcuda.so")`, so
//! cudarc drives the emulator without knowing it.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so");
    }
}
