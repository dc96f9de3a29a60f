//! The one way into memory that other processes share: [`Region`] hands
//! out atomics and byte copies at offsets, and the atomic types the rest of
//! the library uses come from here.

mod region;

pub(crate) use region::Region;
