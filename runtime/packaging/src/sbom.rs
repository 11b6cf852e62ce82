//! The software bill of materials (CycloneDX JSON): Rust crates and image packages.
