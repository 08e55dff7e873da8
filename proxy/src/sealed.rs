//! Frame bodies in sealed memory files, so that hub connections can send them by reference.
//!
//! A cached body of [`MIN_SEALED`] bytes or more is copied once, when it is stored, into its
//! own memory file (`memfd_create`), which is then sealed against writing, growing and
//! shrinking, and mapped read-only. The body's [`Bytes`] point into that mapping. When a hub
//! connection is asked to write bytes that lie inside such a mapping, it calls [`find`] and
//! sends them with `sendfile(2)` from the file instead of copying them into the socket (see
//! `hub_listener`): the kernel hands the file's pages to the socket by reference, as nginx
//! does with `sendfile on`.
//!
//! Sending by reference cannot show a hub anything but the verified frame:
//! - the seals make the file's bytes immutable for its whole life, which lasts as long as any
//!   socket still holds one of its pages, whatever the cache has dropped since;
//! - a file's pages are its own: they are never reused for another body while referenced
//!   (which is why heap memory is never sent this way);
//! - [`find`] answers only for a slice that lies wholly inside one live mapping, and a caller
//!   holding such a slice keeps that mapping alive.
//!
//! Each sealed body holds one file descriptor and one mapping, and takes whole pages. Sealing
//! stops at half of the process's open-file limit (raised to its hard limit by [`init`]) and
//! half of its mapping limit, so that sockets and the allocator never starve; a body that
//! cannot be sealed stays on the heap and is sent by copy. The cache charges a sealed body its
//! whole pages ([`footprint`]).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};

use bytes::Bytes;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

/// Bodies smaller than this stay on the heap: copying them costs less than a descriptor.
pub const MIN_SEALED: usize = 16 * 1024;

/// Live mappings by start address: length and the memory file to send from.
static MAPPINGS: RwLock<BTreeMap<usize, (usize, RawFd)>> = RwLock::new(BTreeMap::new());

/// Sealed bodies alive now.
static SEALED: AtomicUsize = AtomicUsize::new(0);

/// Body bytes sent by reference so far (what [`sent_by_reference`] reports).
static SENT_BY_REFERENCE: AtomicU64 = AtomicU64::new(0);

/// How many bodies may be sealed at once: half the open-file limit, and half the mappings a
/// process may have (`vm.max_map_count`; each body is one), so that sockets, the allocator and
/// thread stacks always have room.
fn budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let files = limit.current.unwrap_or(u64::MAX) / 2;
        let maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(65_530)
            / 2;
        usize::try_from(files.min(maps)).unwrap_or(usize::MAX)
    })
}

/// Raises the soft open-file limit to the hard limit (as nginx's `worker_rlimit_nofile` and
/// Go's runtime do), so that sealed bodies and hub sockets both fit. Call once at start-up,
/// before any body is sealed. Returns the limit in force.
pub fn init() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    let current = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    budget();
    current
}

/// `body` in a sealed memory file when it is large enough and a descriptor is free; otherwise
/// `body` itself. The bytes are the same either way.
pub fn seal(body: Bytes) -> Bytes {
    if body.len() < MIN_SEALED || SEALED.load(Ordering::Relaxed) >= budget() {
        return body;
    }
    match SealedBody::new(&body) {
        Ok(sealed) => Bytes::from_owner(sealed),
        Err(e) => {
            tracing::debug!(error = %e, "body kept on the heap");
            body
        }
    }
}

/// The memory file and offset `buf` can be sent from, when it lies wholly inside a sealed
/// body's mapping. The descriptor stays valid while the caller holds `buf`.
pub fn find(buf: &[u8]) -> Option<(BorrowedFd<'_>, u64)> {
    let (fd, offset) = lookup(buf.as_ptr() as usize, buf.len())?;
    // SAFETY: the mapping `buf` lies in is registered from its creation to its drop, and its
    // file stays open as long; `buf` borrows from that body, so both outlive the result.
    Some((unsafe { BorrowedFd::borrow_raw(fd) }, offset))
}

/// The registered file and offset of the `len` bytes at address `start`, when they lie wholly
/// inside one mapping.
fn lookup(start: usize, len: usize) -> Option<(RawFd, u64)> {
    let map = MAPPINGS.read().unwrap_or_else(PoisonError::into_inner);
    let (&base, &(mapped, fd)) = map.range(..=start).next_back()?;
    let offset = start - base;
    if offset.checked_add(len)? > mapped {
        return None;
    }
    Some((fd, offset as u64))
}

/// The memory `body` takes: a sealed body whole pages of its file, any other its length.
pub fn footprint(body: &[u8]) -> usize {
    if body.len() >= MIN_SEALED && find(body).is_some() {
        let page = rustix::param::page_size();
        body.len().div_ceil(page) * page
    } else {
        body.len()
    }
}

/// Counts `n` body bytes as sent by reference.
pub fn count_sent(n: usize) {
    SENT_BY_REFERENCE.fetch_add(n as u64, Ordering::Relaxed);
}

/// Body bytes sent by reference since the process started.
pub fn sent_by_reference() -> u64 {
    SENT_BY_REFERENCE.load(Ordering::Relaxed)
}

/// Sealed bodies alive now.
pub fn sealed_bodies() -> usize {
    SEALED.load(Ordering::Relaxed)
}

/// One body in a sealed, read-only mapped memory file.
struct SealedBody {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is read-only and immutable (sealed) for its whole life; it is unmapped
// only on drop.
unsafe impl Send for SealedBody {}
unsafe impl Sync for SealedBody {}

impl SealedBody {
    fn new(bytes: &[u8]) -> io::Result<SealedBody> {
        let fd = rustix::fs::memfd_create(
            "framecache-body",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, bytes.len() as u64)?;
        let mut written = 0;
        while written < bytes.len() {
            match rustix::io::pwrite(&fd, &bytes[written..], written as u64) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        rustix::fs::fcntl_add_seals(
            &fd,
            SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
        )?;
        // SAFETY: a fresh shared read-only mapping of a file of exactly `bytes.len()` bytes
        // that no one can change any more.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                bytes.len(),
                ProtFlags::READ,
                MapFlags::SHARED | MapFlags::POPULATE,
                &fd,
                0,
            )?
        };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(io::ErrorKind::InvalidData)?;
        let body = SealedBody {
            ptr,
            len: bytes.len(),
            fd,
        };
        MAPPINGS
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ptr.as_ptr() as usize, (body.len, body.fd.as_raw_fd()));
        SEALED.fetch_add(1, Ordering::Relaxed);
        Ok(body)
    }
}

impl AsRef<[u8]> for SealedBody {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SealedBody {
    fn drop(&mut self) {
        // Unregister first: no new send may find the file once it is being closed.
        MAPPINGS
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(self.ptr.as_ptr() as usize));
        SEALED.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the mapping was made in `new` with this address and length; nothing borrows
        // from it any more (the `Bytes` owning this body are gone).
        if let Err(e) = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) } {
            tracing::error!(error = %e, "cannot unmap a sealed body");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| (i * 7 + i / 251) as u8)
                .collect::<Vec<u8>>(),
        )
    }

    #[test]
    fn a_sealed_body_has_the_same_bytes_and_is_found_at_its_offsets() {
        let original = pattern(100_000);
        let sealed = seal(original.clone());
        assert_eq!(sealed, original);
        assert_ne!(
            sealed.as_ptr(),
            original.as_ptr(),
            "sealed into its own mapping"
        );
        let (_, offset) = find(&sealed).expect("the whole body is found");
        assert_eq!(offset, 0);
        let part = sealed.slice(4096..50_000);
        let (_, offset) = find(&part).expect("a range of it is found");
        assert_eq!(offset, 4096);
    }

    #[test]
    fn heap_bytes_and_small_bodies_are_not_found() {
        let heap = pattern(100_000);
        assert!(find(&heap).is_none());
        let small = seal(pattern(MIN_SEALED - 1));
        assert!(find(&small).is_none(), "small bodies stay on the heap");
        let empty = seal(Bytes::new());
        assert!(empty.is_empty() && find(&empty).is_none());
    }

    #[test]
    fn the_file_refuses_every_change() {
        let sealed = seal(pattern(MIN_SEALED));
        let (fd, _) = find(&sealed).expect("sealed");
        let seals = rustix::fs::fcntl_get_seals(fd).expect("seals");
        assert!(seals.contains(SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK));
        assert!(
            rustix::io::pwrite(fd, b"x", 0).is_err(),
            "writing is refused"
        );
        assert!(
            rustix::fs::ftruncate(fd, 1).is_err(),
            "shrinking is refused"
        );
        assert!(
            rustix::fs::ftruncate(fd, 1 << 20).is_err(),
            "growing is refused"
        );
        assert!(
            unsafe {
                rustix::mm::mmap(
                    std::ptr::null_mut(),
                    4096,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED,
                    fd,
                    0,
                )
            }
            .is_err(),
            "a writable mapping is refused"
        );
    }

    #[test]
    fn a_sealed_body_is_charged_whole_pages() {
        let page = rustix::param::page_size();
        let sealed = seal(pattern(MIN_SEALED + 1));
        assert_eq!(footprint(&sealed), (MIN_SEALED + 1).div_ceil(page) * page);
        assert_eq!(
            footprint(&pattern(MIN_SEALED + 1)),
            MIN_SEALED + 1,
            "heap: its length"
        );
    }

    #[test]
    fn only_ranges_wholly_inside_a_mapping_are_found() {
        let sealed = seal(pattern(MIN_SEALED * 2));
        let start = sealed.as_ptr() as usize;
        assert_eq!(lookup(start, sealed.len()).map(|(_, o)| o), Some(0));
        assert_eq!(
            lookup(start + 10, sealed.len() - 10).map(|(_, o)| o),
            Some(10)
        );
        assert!(
            lookup(start, sealed.len() + 1).is_none(),
            "runs past the end"
        );
        assert!(
            lookup(start + sealed.len() - 1, 2).is_none(),
            "runs past the end"
        );
        assert!(lookup(start, usize::MAX).is_none(), "overflows");
    }
}
