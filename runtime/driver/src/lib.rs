//! Host virtualization: which accelerator the engine can really use.
