//! Generates the gRPC servers of the KurrentDB front door (`src/grpc`) from every `.proto` file
//! in `proto/`, without `protoc`: protox parses the files (pure Rust) into a descriptor set,
//! tonic-build generates the messages and server traits from it. The descriptor set is kept in
//! `OUT_DIR` too (`grpc_descriptor.bin`): ServerFeatures lists the methods of the mounted
//! services from it. Adding a service is adding its `.proto` file here; `OUT_DIR/grpc_protos.rs`
//! nests the generated modules by package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from("proto");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let mut compiler = protox::Compiler::new([&dir])?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(&files)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor = out.join("grpc_descriptor.bin");
    std::fs::write(&descriptor, compiler.encode_file_descriptor_set())?;
    tonic_build::configure()
        .build_client(false)
        .build_server(true)
        .build_transport(false)
        .skip_protoc_run()
        .file_descriptor_set_path(&descriptor)
        .include_file("grpc_protos.rs")
        .compile_protos(&files, &[dir])?;
    Ok(())
}
