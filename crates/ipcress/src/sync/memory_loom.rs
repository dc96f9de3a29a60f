//! `Memory` under loom: model memory ([`Region::model`]).

use super::Region;

/// A block of model memory.
pub(crate) struct Memory {
    region: Region,
}

impl Memory {
    /// `len` zeroed bytes of model memory.
    pub(crate) fn zeroed(len: usize) -> Memory {
        Memory {
            region: Region::model(len),
        }
    }

    /// The whole block.
    pub(crate) fn region(&self) -> Region {
        self.region
    }
}
