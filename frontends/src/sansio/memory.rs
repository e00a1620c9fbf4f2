//! The memory all client connections hold together, against
//! `--max-client-memory`: partial frames, input held back by back-pressure
//! and unsent responses ([`Session::buffered`](crate::session::Session::buffered)).
//! Per connection that is bounded by the max frame length plus the output
//! limit; this bounds the sum, as Redis's `maxmemory-clients` does. When
//! the sum passes the cap, the [`Server`](crate::sansio::server::Server)
//! evicts the connection holding the most
//! ([`Session::evict`](crate::session::Session::evict)), and the others
//! keep being served; no driver takes part in that decision.
//!
//! Each connection's charge is also readable from other threads
//! ([`Share`]), so the threaded flavor can pick the biggest connection
//! whichever thread serves it. Whoever picks, picks with [`victim`]: one
//! rule for every flavor.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// The sum of every connection's charge.
#[derive(Debug)]
pub struct ClientMemory {
    cap: usize,
    total: AtomicUsize,
}

impl ClientMemory {
    /// A total of at most `cap` bytes.
    pub fn new(cap: usize) -> ClientMemory {
        ClientMemory { cap, total: AtomicUsize::new(0) }
    }

    /// Moves a connection's charge from `share`'s to `bytes`; true when the
    /// total is now over the cap.
    pub fn charge(&self, share: &Share, bytes: usize) -> bool {
        // Only the connection's own thread writes its charge (others read
        // it): a load and a store, no locked read-modify-write per request.
        let before = share.held.load(Ordering::Relaxed);
        if bytes == before {
            // The common case (nothing held before or after a request): no
            // write to the total, a line that N loops would bounce.
            return self.is_over();
        }
        share.held.store(bytes, Ordering::Relaxed);
        let total = if bytes >= before {
            self.total.fetch_add(bytes - before, Ordering::Relaxed) + (bytes - before)
        } else {
            self.total.fetch_sub(before - bytes, Ordering::Relaxed) - (before - bytes)
        };
        total > self.cap
    }

    /// Sets a connection's charge to `bytes` without touching the total,
    /// and returns the change, for [`ClientMemory::add`] later: a loop adds
    /// its changes once per turn, so a request whose output is sent and
    /// freed in the same turn writes nothing shared.
    pub fn recharge(&self, share: &Share, bytes: usize) -> isize {
        let before = share.held.load(Ordering::Relaxed);
        if bytes == before {
            return 0;
        }
        share.held.store(bytes, Ordering::Relaxed);
        bytes as isize - before as isize
    }

    /// Adds `delta` (changes from [`ClientMemory::recharge`]) to the total.
    pub fn add(&self, delta: isize) {
        if delta > 0 {
            self.total.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else if delta < 0 {
            self.total.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Whether the total, with `pending` changes not added yet, is over the cap.
    pub fn is_over_with(&self, pending: isize) -> bool {
        // i128: a cap near usize::MAX (no cap) is no negative isize.
        self.total.load(Ordering::Relaxed) as i128 + pending as i128 > self.cap as i128
    }

    /// Whether `intakes` more charges of at most `each` bytes apiece fit
    /// under the cap with what is charged now: then, whatever they add
    /// and in whatever order, the total stays under it.
    pub fn has_room_for(&self, intakes: usize, each: usize) -> bool {
        intakes.saturating_mul(each).saturating_add(self.total()) <= self.cap
    }

    /// Whether the total is over the cap.
    pub fn is_over(&self) -> bool {
        self.total.load(Ordering::Relaxed) > self.cap
    }

    /// Bytes held by all connections now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }
}

/// One connection's charge, and whether another thread asked it to go.
#[derive(Debug, Default)]
pub struct Share {
    held: AtomicUsize,
    /// [`STAYING`], [`ASKED`] or [`GONE`].
    state: AtomicU8,
}

/// A candidate for the cap.
const STAYING: u8 = 0;
/// Asked to go by another thread; its own has not acted yet.
const ASKED: u8 = 1;
/// Evicted: what it still holds (answers it is owed) is not freed by
/// asking again.
const GONE: u8 = 2;

impl Share {
    /// Bytes charged for the connection.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Asks the connection's thread to evict it (for good: the session's
    /// eviction happens once however often it is asked).
    pub fn ask_to_evict(&self) {
        let _ = self.state.compare_exchange(STAYING, ASKED, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether its eviction was asked for and its thread has not acted yet.
    pub fn is_evicting(&self) -> bool {
        self.state.load(Ordering::Relaxed) == ASKED
    }

    /// Its session was evicted (asked or not): no longer a candidate, and
    /// what it still holds is not counted on to be freed.
    pub fn evicted(&self) {
        self.state.store(GONE, Ordering::Relaxed);
    }

    /// Whether it was evicted.
    pub fn is_gone(&self) -> bool {
        self.state.load(Ordering::Relaxed) == GONE
    }
}

/// Connections served by other servers that the cap may take instead of
/// one of this server's: the threaded flavor, a server per connection
/// thread, keeps them in its registry. Loops evict their own biggest
/// connections and need none.
pub trait Elsewhere: Sync + std::fmt::Debug {
    /// The total is over the cap and this server's biggest connection, not
    /// evicted yet, holds `mine` bytes. True when the connections elsewhere
    /// make the room: those already asked to go will free enough, or the
    /// [`victim`] of all connections is elsewhere and has now been asked to
    /// go; this server then reads nothing until there is room. False: this
    /// server evicts its own.
    fn make_room(&self, memory: &ClientMemory, mine: usize) -> bool;

    /// A connection of this server asked to go (or evicted for the cap)
    /// has freed its memory.
    fn freed(&self) {}
}

/// What the cap does for a server over it whose biggest connection holds
/// `mine` ([`Elsewhere::make_room`]), given every connection's charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room<K> {
    /// Evict this server's own: it holds the most.
    EvictMine,
    /// The connections already asked to go will free enough: wait for them.
    Wait,
    /// The [`victim`], elsewhere, was asked to go: wake it, then wait.
    Asked(K),
}

/// Makes room over the connections `all` (this server's among them):
/// evicts `mine` at once when it holds the most; otherwise asks the
/// [`victim`] of those not leaving to go, unless the ones already asked
/// free enough: their threads act a moment later, and every charge over
/// the cap meanwhile would otherwise evict one more connection, down to
/// well-behaved ones. Connections already evicted are neither: what they
/// still hold is owed to their peers. `mine` is 0 when this server has no
/// candidate left (its evicted connection acted and freed too little): then
/// the next victim is asked, or nobody holds anything that could go.
pub fn make_room<'s, K>(
    memory: &ClientMemory,
    mine: usize,
    all: impl Iterator<Item = (K, &'s Share)> + Clone,
) -> Room<K> {
    let all = all.filter(|(_, share)| !share.is_gone());
    if all.clone().all(|(_, share)| share.held() <= mine) {
        return Room::EvictMine;
    }
    let leaving: usize = all.clone().filter(|(_, share)| share.is_evicting()).map(|(_, share)| share.held()).sum();
    if memory.total().saturating_sub(leaving) <= memory.cap() {
        return Room::Wait;
    }
    let staying = all.filter(|(_, share)| !share.is_evicting()).map(|(key, share)| ((key, share), share.held()));
    match victim(staying) {
        Some((key, share)) if share.held() > mine => {
            share.ask_to_evict();
            Room::Asked(key)
        }
        _ => Room::EvictMine,
    }
}

/// The one victim rule: of the connections still candidates (not already
/// evicted), the one charged the most, if any holds anything. Evicting it
/// frees the most with one connection lost.
pub fn victim<K>(candidates: impl Iterator<Item = (K, usize)>) -> Option<K> {
    candidates.filter(|&(_, held)| held > 0).max_by_key(|&(_, held)| held).map(|(key, _)| key)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_victim_is_the_biggest_holder() {
        assert_eq!(victim([("a", 10), ("b", 30), ("c", 20)].into_iter()), Some("b"));
        assert_eq!(victim([("a", 0), ("b", 0)].into_iter()), None, "nobody holds anything");
        assert_eq!(victim(std::iter::empty::<((), usize)>()), None);
    }

    #[test]
    fn room_is_made_by_the_biggest_leaving_or_by_mine() {
        let memory = ClientMemory::new(100);
        let shares: Vec<Share> = (0..3).map(|_| Share::default()).collect();
        for (share, held) in shares.iter().zip([60, 20, 30]) {
            memory.charge(share, held);
        }
        let all = || shares.iter().enumerate();
        assert_eq!(make_room(&memory, 30, all()), Room::Asked(0), "the biggest is elsewhere: asked");
        assert!(shares[0].is_evicting());
        assert_eq!(make_room(&memory, 30, all()), Room::Wait, "the one leaving frees enough");
        assert!(!shares[1].is_evicting() && !shares[2].is_evicting(), "nobody else is asked");
        memory.charge(&shares[0], 0);
        memory.charge(&shares[2], 90);
        assert_eq!(make_room(&memory, 90, all()), Room::EvictMine, "holding the most, mine goes");
    }

    /// The server's `threaded-victim-frees-too-little` (fuzz/regressions/server).
    #[test]
    fn a_victim_that_freed_too_little_is_not_counted_on_again() {
        let memory = ClientMemory::new(100);
        let shares: Vec<Share> = (0..3).map(|_| Share::default()).collect();
        for (share, held) in shares.iter().zip([60, 30, 20]) {
            memory.charge(share, held);
        }
        let all = || shares.iter().enumerate();
        assert_eq!(make_room(&memory, 20, all()), Room::Asked(0));
        // Its thread acts: its 60 bytes are answers it is owed, and stay.
        shares[0].evicted();
        assert!(!shares[0].is_evicting() && shares[0].is_gone());
        assert_eq!(make_room(&memory, 0, all()), Room::Asked(1), "still over: the next biggest is asked");
        shares[0].ask_to_evict();
        assert!(shares[0].is_gone(), "asking one gone changes nothing");
        for share in &shares {
            share.evicted();
        }
        assert_eq!(make_room(&memory, 0, all()), Room::EvictMine, "nobody left to ask");
    }

    #[test]
    fn charges_add_up_and_moving_one_updates_the_total() {
        let memory = ClientMemory::new(100);
        let (a, b) = (Share::default(), Share::default());
        assert!(!memory.charge(&a, 60));
        assert!(!memory.charge(&b, 40));
        assert_eq!(memory.total(), 100);
        assert!(memory.charge(&a, 61), "over by one");
        assert!(memory.is_over());
        assert!(!memory.charge(&b, 0));
        assert_eq!((memory.total(), a.held(), b.held()), (61, 61, 0));
        assert_eq!(memory.recharge(&b, 30), 30, "a change, not yet in the total");
        assert!(memory.is_over_with(40) && !memory.is_over_with(30));
        memory.add(30);
        assert_eq!(memory.total(), 91);
        assert!(!ClientMemory::new(usize::MAX).is_over_with(isize::MAX), "no cap is never passed");
        assert!(memory.has_room_for(1, 9) && !memory.has_room_for(1, 10), "91 held: 9 more fit, 10 do not");
        assert!(memory.has_room_for(0, usize::MAX) && !memory.has_room_for(2, usize::MAX / 2 + 1));
        assert!(!a.is_evicting());
        a.ask_to_evict();
        assert!(a.is_evicting() && !a.is_gone());
    }
}
