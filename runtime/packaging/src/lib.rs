//! Release packaging, one small module per format. `cargo xtask dist`
//! orchestrates them; each module is testable on its own, without a
//! pipeline run.

pub mod authenticode;
pub mod deb;
pub mod linux;
pub mod manpage;
pub mod nsis;
pub mod sbom;
pub mod signature;
pub mod tarball;
