//! The one raw pointer the engine hands to rayon tasks.

/// A `*mut T` or `*const T` that may cross to other threads, for
/// parallel loops where every task reads or writes a part of the pointee
/// no other task writes (distinct output tiles, rows, matrices), and the
/// owner outlives the loop (all tasks are joined before it returns).
///
/// Take the pointer out with [`Shared::get`] inside the task: a closure
/// that names the wrapper's field would capture the bare pointer, which is
/// not `Send`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shared<P>(P);

// SAFETY: the wrapper only moves an address between threads; every
// dereference stays in the unsafe code that created it, whose contract
// (disjoint writes, no reads of what another task writes, the owner alive
// until every task is joined) makes the cross-thread use sound.
unsafe impl<T> Send for Shared<*mut T> {}
// SAFETY: as for `Send`: sharing `&Shared` only shares the address.
unsafe impl<T> Sync for Shared<*mut T> {}
// SAFETY: as above, for read-only pointers.
unsafe impl<T> Send for Shared<*const T> {}
// SAFETY: as above, for read-only pointers.
unsafe impl<T> Sync for Shared<*const T> {}

impl<P: Copy> Shared<P> {
    pub(crate) fn new(ptr: P) -> Self {
        Self(ptr)
    }

    pub(crate) fn get(self) -> P {
        self.0
    }
}
