//! Ring buffers for the send and receive sides, addressed by 64-bit stream
//! offsets (the 32-bit wire sequence numbers are unwrapped by the engine), so
//! wrap-around never needs special cases here.
//!
//! Memory is allocated lazily: a ring grows (doubling) only as far as the data
//! actually held requires, up to its capacity, so a connection that moves a
//! few kilobytes never pays for a multi-megabyte window.

use super::range_set::RangeSet;

/// Most out-of-order ranges the receive side holds. The peer decides which
/// segments arrive, so without a bound it could make us track one range
/// per two bytes of window. A 1-BDP window on a lossy path has a few dozen
/// holes (10 % loss over ~430 segments: ~45); 1024 leaves ample room. A
/// segment that would open range 1025 is dropped unstored (the peer
/// retransmits it as if lost); segments that extend or join ranges, and the
/// in-order segment at `nxt`, are always taken.
pub(crate) const MAX_OOO_RANGES: usize = 1024;

/// Smallest allocation once a ring holds anything.
const MIN_ALLOC: usize = 16 * 1024;

/// A byte ring of fixed logical capacity whose storage grows on demand.
#[derive(Debug)]
struct Ring {
    /// Storage; its length is a power of two (or zero) and at most the
    /// capacity rounded up to a power of two.
    buf: Vec<u8>,
    capacity: usize,
}

impl Ring {
    fn new(capacity: usize) -> Ring {
        Ring {
            buf: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    /// Makes sure offsets `[start, end)` can be stored, given that the ring
    /// currently holds meaningful bytes in `[live_start, live_end)`.
    fn reserve(&mut self, live_start: u64, live_end: u64, end: u64) {
        let need = (end - live_start) as usize;
        if need <= self.buf.len() {
            return;
        }
        let new_len = need
            .max(MIN_ALLOC)
            .next_power_of_two()
            .min(self.capacity.next_power_of_two());
        let mut new_buf = vec![0u8; new_len];
        // Move live bytes to their positions in the new ring.
        let mut pos = live_start;
        while pos < live_end {
            let (src, n) = self.span(pos, (live_end - pos) as usize);
            let dst = (pos as usize) & (new_len - 1);
            let n = n.min(new_len - dst);
            new_buf[dst..dst + n].copy_from_slice(&self.buf[src..src + n]);
            pos += n as u64;
        }
        self.buf = new_buf;
    }

    /// Index of `pos` and the number of contiguous bytes from there (≤ `len`).
    #[inline]
    fn span(&self, pos: u64, len: usize) -> (usize, usize) {
        let mask = self.buf.len() - 1;
        let i = (pos as usize) & mask;
        (i, len.min(self.buf.len() - i))
    }

    fn write(&mut self, mut pos: u64, mut data: &[u8]) {
        while !data.is_empty() {
            let (i, n) = self.span(pos, data.len());
            self.buf[i..i + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            pos += n as u64;
        }
    }

    /// The (at most two) slices holding `[pos, pos + len)`.
    fn slices(&self, pos: u64, len: usize) -> (&[u8], &[u8]) {
        if len == 0 {
            return (&[], &[]);
        }
        let (i, n) = self.span(pos, len);
        let first = &self.buf[i..i + n];
        let second = &self.buf[..len - n];
        (first, second)
    }
}

/// Send side: bytes from `una` (oldest unacknowledged) to `end` (last queued).
#[derive(Debug)]
pub(crate) struct SendBuffer {
    ring: Ring,
    una: u64,
    end: u64,
}

impl SendBuffer {
    pub(crate) fn new(capacity: usize) -> SendBuffer {
        SendBuffer {
            ring: Ring::new(capacity),
            una: 0,
            end: 0,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.ring.capacity
    }

    /// Bytes queued and not yet acknowledged.
    pub(crate) fn len(&self) -> usize {
        (self.end - self.una) as usize
    }

    pub(crate) fn free(&self) -> usize {
        self.ring.capacity - self.len()
    }

    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Appends as much of `data` as fits; returns how much.
    pub(crate) fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        if n == 0 {
            return 0;
        }
        let new_end = self.end + n as u64;
        self.ring.reserve(self.una, self.end, new_end);
        self.ring.write(self.end, &data[..n]);
        self.end = new_end;
        n
    }

    /// The bytes `[pos, pos + len)` (must lie within `[una, end)`), as up to
    /// two slices.
    pub(crate) fn slices(&self, pos: u64, len: usize) -> (&[u8], &[u8]) {
        debug_assert!(pos >= self.una && pos + len as u64 <= self.end);
        self.ring.slices(pos, len)
    }

    /// Drops everything before `pos`.
    pub(crate) fn ack_to(&mut self, pos: u64) {
        self.una = pos.clamp(self.una, self.end);
    }
}

/// Receive side: bytes readable by the application are `[read, nxt)`;
/// out-of-order data beyond `nxt` sits in the ring at its own offset and is
/// remembered in `ooo` (at most [`MAX_OOO_RANGES`] ranges, see there).
#[derive(Debug)]
pub(crate) struct RecvBuffer {
    ring: Ring,
    read: u64,
    nxt: u64,
    ooo: RangeSet,
}

impl RecvBuffer {
    pub(crate) fn new(capacity: usize) -> RecvBuffer {
        RecvBuffer {
            ring: Ring::new(capacity),
            read: 0,
            nxt: 0,
            ooo: RangeSet::new(MAX_OOO_RANGES),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.ring.capacity
    }

    /// Next in-order offset expected (`rcv_nxt`).
    pub(crate) fn nxt(&self) -> u64 {
        self.nxt
    }

    /// Bytes ready for the application.
    pub(crate) fn readable(&self) -> usize {
        (self.nxt - self.read) as usize
    }

    /// Free space counted from `nxt`: what the advertised window is made of.
    pub(crate) fn free(&self) -> usize {
        self.ring.capacity - self.readable()
    }

    /// Whether out-of-order data is being held.
    pub(crate) fn has_gaps(&self) -> bool {
        !self.ooo.is_empty()
    }

    /// Skips `n` sequence numbers that carry no stream data (the peer's
    /// CONNECT control bytes). Only valid while nothing is buffered.
    pub(crate) fn skip(&mut self, n: u64) {
        debug_assert!(self.read == self.nxt && self.ooo.is_empty());
        self.nxt += n;
        self.read = self.nxt;
    }

    /// Out-of-order ranges held.
    pub(crate) fn ooo_ranges(&self) -> &RangeSet {
        &self.ooo
    }

    /// Discards `n` in-order bytes arriving after a graceful close, together
    /// with everything buffered: the application will not read any more.
    pub(crate) fn skip_unread(&mut self, n: u64) {
        self.nxt += n;
        self.read = self.nxt;
        self.ooo.clear();
    }

    /// Stores a segment starting at `seq`, trimmed to the window
    /// `[nxt, read + capacity)`. Returns the number of bytes by which `nxt`
    /// advanced.
    pub(crate) fn insert(&mut self, seq: u64, data: &[u8]) -> u64 {
        let limit = self.read + self.ring.capacity as u64;
        let start = seq.max(self.nxt);
        let end = (seq + data.len() as u64).min(limit);
        if start >= end {
            return 0;
        }
        // Bytes the ring holds now: up to the end of the last range.
        let live_end = self
            .ooo
            .iter()
            .next_back()
            .map_or(self.nxt, |r| r.1)
            .max(self.nxt);
        if start != self.nxt && !self.ooo.insert(start, end) {
            // Would open one range too many: drop it unstored.
            return 0;
        }
        let slice = &data[(start - seq) as usize..(end - seq) as usize];
        self.ring.reserve(self.read, live_end, end.max(live_end));
        self.ring.write(start, slice);
        if start == self.nxt {
            let before = self.nxt;
            self.nxt = end;
            // Pull in out-of-order ranges that are now contiguous.
            while let Some((_, e)) = self.ooo.pop_first_if_reaches(self.nxt) {
                self.nxt = self.nxt.max(e);
            }
            self.nxt - before
        } else {
            0
        }
    }

    /// Hands up to `max` readable bytes to `f` (at most two slices, in
    /// order) and consumes them; returns how many.
    pub(crate) fn read_with(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let n = max.min(self.readable());
        let (a, b) = self.ring.slices(self.read, n);
        f(a);
        if !b.is_empty() {
            f(b);
        }
        self.read += n as u64;
        n
    }

    /// Copies readable bytes into `out`; returns how many.
    #[cfg(test)]
    pub(crate) fn read(&mut self, out: &mut [u8]) -> usize {
        let mut at = 0;
        self.read_with(out.len(), |s| {
            out[at..at + s.len()].copy_from_slice(s);
            at += s.len();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(start: u64, len: usize) -> Vec<u8> {
        (start..start + len as u64)
            .map(|i| (i * 7 + 3) as u8)
            .collect()
    }

    #[test]
    fn send_buffer_wraps_and_grows() {
        let mut s = SendBuffer::new(100_000);
        let mut pos = 0u64;
        let mut una = 0u64;
        for round in 0..50 {
            let n = s.push(&bytes(pos, 30_000 + round * 7));
            pos += n as u64;
            assert_eq!(s.end(), pos);
            let (a, b) = s.slices(una, s.len());
            let mut got = a.to_vec();
            got.extend_from_slice(b);
            assert_eq!(got, bytes(una, s.len()));
            una += (s.len() / 2) as u64;
            s.ack_to(una);
        }
        assert!(s.free() <= 100_000);
    }

    #[test]
    fn send_buffer_push_is_bounded_by_capacity() {
        let mut s = SendBuffer::new(10);
        assert_eq!(s.push(&[1; 25]), 10);
        assert_eq!(s.push(&[1; 25]), 0);
        s.ack_to(4);
        assert_eq!(s.free(), 4);
        assert_eq!(s.push(&[2; 25]), 4);
    }

    #[test]
    fn recv_buffer_reassembles_out_of_order() {
        let mut r = RecvBuffer::new(1 << 20);
        let data = bytes(0, 50_000);
        // segments of 1000 in a shuffled order
        let mut order: Vec<usize> = (0..50).collect();
        order.reverse();
        order.swap(3, 40);
        let mut advanced = 0;
        for i in order {
            advanced += r.insert(i as u64 * 1000, &data[i * 1000..(i + 1) * 1000]);
        }
        assert_eq!(advanced, 50_000);
        assert!(!r.has_gaps());
        let mut out = vec![0u8; 60_000];
        assert_eq!(r.read(&mut out), 50_000);
        assert_eq!(&out[..50_000], &data[..]);
    }

    #[test]
    fn recv_buffer_trims_to_window_and_ignores_duplicates() {
        let mut r = RecvBuffer::new(1000);
        let data = bytes(0, 3000);
        assert_eq!(r.insert(500, &data[500..1500]), 0); // trimmed to [500,1000)
        assert_eq!(r.insert(0, &data[0..600]), 1000);
        assert_eq!(r.free(), 0);
        assert_eq!(r.insert(1000, &data[1000..1100]), 0); // window closed
        assert_eq!(r.insert(0, &data[0..1000]), 0); // old
        let mut out = vec![0u8; 400];
        assert_eq!(r.read(&mut out), 400);
        assert_eq!(&out[..], &data[..400]);
        assert_eq!(r.insert(900, &data[900..1600]), 400);
        let mut out = vec![0u8; 2000];
        assert_eq!(r.read(&mut out), 1000);
        assert_eq!(&out[..1000], &data[400..1400]);
    }

    #[test]
    fn recv_buffer_merges_overlapping_ranges() {
        let mut r = RecvBuffer::new(1 << 16);
        let data = bytes(0, 10_000);
        r.insert(5000, &data[5000..6000]);
        r.insert(7000, &data[7000..8000]);
        r.insert(5500, &data[5500..7500]);
        r.insert(9000, &data[9000..9500]);
        assert_eq!(
            r.ooo.iter().collect::<Vec<_>>(),
            vec![(5000, 8000), (9000, 9500)]
        );
        r.insert(8000, &data[8000..9000]);
        assert_eq!(r.ooo.iter().collect::<Vec<_>>(), vec![(5000, 9500)]);
        assert_eq!(r.insert(0, &data[0..5000]), 9500);
        let mut out = vec![0u8; 9500];
        r.read(&mut out);
        assert_eq!(&out[..], &data[..9500]);
    }

    #[test]
    fn skip_consumes_sequence_space_without_data() {
        let mut r = RecvBuffer::new(100);
        r.skip(7);
        assert_eq!(r.nxt(), 7);
        assert_eq!(r.readable(), 0);
        assert_eq!(r.insert(7, b"abc"), 3);
        let mut out = [0u8; 3];
        r.read(&mut out);
        assert_eq!(&out, b"abc");
    }
}
