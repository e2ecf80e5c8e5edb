//! Code generated from `proto/` by `build.rs`.

/// TorchEasyRec's config schema (`tzrec.protos`).
#[allow(clippy::all, missing_docs)]
pub mod tzrec {
    pub mod protos {
        include!(concat!(env!("OUT_DIR"), "/tzrec.protos.rs"));
    }
}

/// The compiled plan format (`plec.plan`).
#[allow(clippy::all, missing_docs)]
pub mod plan {
    include!(concat!(env!("OUT_DIR"), "/plec.plan.rs"));
}

/// The training checkpoint format (`plec.checkpoint`).
#[allow(clippy::all, missing_docs)]
pub mod checkpoint {
    include!(concat!(env!("OUT_DIR"), "/plec.checkpoint.rs"));
}

/// Encoded `FileDescriptorSet` of every file under `proto/`: the schema the
/// binder checks configs against by default.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor_set.bin"));

/// Encoded `FileDescriptorSet` of `proto/easyrec/`: EasyRec's config schema
/// (`protos`), for `plec check --schema easyrec` and dialect detection.
pub const EASYREC_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/easyrec_descriptor_set.bin"));
