//! The few `MediaInfoA_*` functions of libmediainfo's C interface this crate calls, and a safe
//! owner of one handle. The buffer interface is used (`Open_Buffer_*`), so a file is read from
//! wherever it lives, in pieces, jumping where the parser asks (an mp4's `moov` at its end).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::NonNull;

// MediaInfo_stream_t
pub const STREAM_GENERAL: c_int = 0;
pub const STREAM_VIDEO: c_int = 1;
pub const STREAM_AUDIO: c_int = 2;
pub const STREAM_IMAGE: c_int = 5;
// MediaInfo_info_t
const INFO_NAME: c_int = 0;
const INFO_TEXT: c_int = 1;

extern "C" {
    fn MediaInfoA_New() -> *mut c_void;
    fn MediaInfoA_Delete(handle: *mut c_void);
    fn MediaInfoA_Option(
        handle: *mut c_void,
        option: *const c_char,
        value: *const c_char,
    ) -> *const c_char;
    fn MediaInfoA_Open_Buffer_Init(handle: *mut c_void, size: u64, offset: u64) -> usize;
    fn MediaInfoA_Open_Buffer_Continue(handle: *mut c_void, buf: *const u8, len: usize) -> usize;
    fn MediaInfoA_Open_Buffer_Continue_GoTo_Get(handle: *mut c_void) -> u64;
    fn MediaInfoA_Open_Buffer_Finalize(handle: *mut c_void) -> usize;
    fn MediaInfoA_Get(
        handle: *mut c_void,
        stream: c_int,
        number: usize,
        parameter: *const c_char,
        info: c_int,
        search: c_int,
    ) -> *const c_char;
    fn MediaInfoA_Count_Get(handle: *mut c_void, stream: c_int, number: usize) -> usize;
}

/// What the parser wants after a piece of the file.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The following bytes.
    More,
    /// The bytes from this offset on.
    Seek(u64),
    /// Nothing more: it knows what it will know.
    Done,
}

/// One libmediainfo handle reading one file of a known size. Not `Sync`: a handle is used by
/// one thread at a time; moving it between threads is fine.
pub struct Handle(NonNull<c_void>);

// SAFETY: libmediainfo keeps no thread-affine state in a handle; it is only never used by two
// threads at once, which `&mut self` on every call guarantees.
unsafe impl Send for Handle {}

impl Handle {
    pub fn new(size: u64) -> Option<Handle> {
        // SAFETY: no arguments; a null return is checked.
        let h = NonNull::new(unsafe { MediaInfoA_New() })?;
        let mut h = Handle(h);
        // Text fields (titles, performers) come back as UTF-8 rather than in the C locale.
        h.option("CharSet", "UTF-8");
        // A whole 2 GB file is never wanted: headers and a few frames say enough.
        h.option("ParseSpeed", "0");
        h.init(size, 0);
        Some(h)
    }

    fn option(&mut self, option: &str, value: &str) {
        let (o, v) = (cstring(option), cstring(value));
        // SAFETY: valid handle and NUL-terminated strings; the answer is not kept.
        unsafe { MediaInfoA_Option(self.0.as_ptr(), o.as_ptr(), v.as_ptr()) };
    }

    /// Starts (again) at `offset`: the next `feed` gives the bytes from there.
    pub fn init(&mut self, size: u64, offset: u64) {
        // SAFETY: valid handle.
        unsafe { MediaInfoA_Open_Buffer_Init(self.0.as_ptr(), size, offset) };
    }

    /// Gives the next bytes; says what the parser wants next and whether it has recognised a
    /// format yet (libmediainfo's "accepted" bit).
    pub fn feed(&mut self, buf: &[u8]) -> (Next, bool) {
        // SAFETY: valid handle; the library reads `len` bytes from `buf` during the call only.
        let status =
            unsafe { MediaInfoA_Open_Buffer_Continue(self.0.as_ptr(), buf.as_ptr(), buf.len()) };
        // SAFETY: valid handle.
        let goto = unsafe { MediaInfoA_Open_Buffer_Continue_GoTo_Get(self.0.as_ptr()) };
        let next = if goto != u64::MAX {
            Next::Seek(goto)
        } else if status & 0x08 != 0 {
            Next::Done
        } else {
            Next::More
        };
        (next, status & 0x01 != 0)
    }

    pub fn finish(&mut self) {
        // SAFETY: valid handle.
        unsafe { MediaInfoA_Open_Buffer_Finalize(self.0.as_ptr()) };
    }

    pub fn count(&mut self, stream: c_int) -> usize {
        // SAFETY: valid handle; usize::MAX (-1) asks for the number of streams of that kind.
        unsafe { MediaInfoA_Count_Get(self.0.as_ptr(), stream, usize::MAX) }
    }

    /// A field of the first stream of a kind; `None` when empty.
    pub fn get(&mut self, stream: c_int, field: &str) -> Option<String> {
        let f = cstring(field);
        // SAFETY: valid handle and NUL-terminated name. The answer points into a buffer the
        // library reuses on the next call, so it is copied before anything else is called.
        let s = unsafe {
            let p = MediaInfoA_Get(self.0.as_ptr(), stream, 0, f.as_ptr(), INFO_TEXT, INFO_NAME);
            if p.is_null() {
                return None;
            }
            CStr::from_ptr(p).to_string_lossy().into_owned()
        };
        let s = s.trim().to_owned();
        (!s.is_empty()).then_some(s)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from MediaInfoA_New and is deleted once.
        unsafe { MediaInfoA_Delete(self.0.as_ptr()) }
    }
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).expect("NULs removed")
}
