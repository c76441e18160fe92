//! Host allocations whose size a caller chooses: reserved fallibly first, so a size past the
//! machine's memory is [`Error::HostMemory`] naming the argument, not an abort.

use crate::error::{Error, Result};

/// An empty vector with room for `len` elements, or [`Error::HostMemory`].
pub(crate) fn vec_with_capacity<T>(argument: &'static str, len: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::HostMemory {
        argument,
        bytes: (len as u64).saturating_mul(std::mem::size_of::<T>() as u64),
    })?;
    Ok(v)
}

/// `len` copies of `value`, or [`Error::HostMemory`].
pub(crate) fn filled<T: Clone>(argument: &'static str, len: usize, value: T) -> Result<Vec<T>> {
    let mut v = vec_with_capacity(argument, len)?;
    v.resize(len, value);
    Ok(v)
}
