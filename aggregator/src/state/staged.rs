//! The schedule of a run of events' lookups. Each event is looked up in three steps a
//! few events apart, and each step asks into cache (prefetches: hints that never block)
//! what the next step reads. So the cache misses of one event's lookup overlap other
//! events' work instead of stalling its own.
//!
//! [`PartitionState::apply_sales`](super::PartitionState::apply_sales) runs it. So does
//! the bench's lower bound (`aggregator/benches/lean`), which must overlap its misses the
//! way the state does to be a bound of the same schedule.

/// How many events ahead the first step (sight) runs: the event's identity and hashes,
/// with the first lines it needs asked into cache. Each step below is a few events' work
/// (about a microsecond) after the one before, longer than a miss to memory.
pub const AHEAD: usize = 16;
/// How many events ahead the second step (probe) runs: it reads what the first asked for
/// (in cache by then) and asks for what the third reads.
pub const PROBE: usize = 8;
/// How many events ahead the third step (resolve) runs, before the event is applied.
pub const RESOLVE: usize = 4;

/// Runs the events `evs` through the steps on `state`, in order: `sight` makes an event's
/// lookup, `probe` and `resolve` advance it, and `apply` applies the event with it. Every
/// event goes through every step, in that order, before it is applied; `apply` sees the
/// events in order, and the steps of the events after may already have run (a step must
/// allow for an earlier event's application after it). `none` fills the ring where a run
/// is shorter than it.
///
/// Always inlined: the state's `apply_sales` then compiles to the loop it had before this
/// function was split out (a separate function measured 3–7 % slower on the mix), and
/// `apply` takes the lookup by reference (by value it cost a 104-byte copy an event).
#[inline(always)]
pub fn run<T, E, A: Copy>(
    state: &mut T,
    evs: &[E],
    none: A,
    sight: impl Fn(&mut T, &E) -> A,
    probe: impl Fn(&T, &mut A),
    resolve: impl Fn(&T, &mut A),
    mut apply: impl FnMut(&mut T, &E, &A),
) {
    let n = evs.len();
    let mut ring = [none; AHEAD];
    for (slot, ev) in ring.iter_mut().zip(evs) {
        *slot = sight(state, ev);
    }
    for a in ring.iter_mut().take(n.min(PROBE)) {
        probe(state, a);
    }
    for a in ring.iter_mut().take(n.min(RESOLVE)) {
        resolve(state, a);
    }
    for (j, ev) in evs.iter().enumerate() {
        // Copied out before the slot takes the event `AHEAD` on.
        let known = ring[j % AHEAD];
        if let Some(next) = evs.get(j + AHEAD) {
            ring[j % AHEAD] = sight(state, next);
        }
        if j + PROBE < n {
            probe(state, &mut ring[(j + PROBE) % AHEAD]);
        }
        if j + RESOLVE < n {
            resolve(state, &mut ring[(j + RESOLVE) % AHEAD]);
        }
        apply(state, ev, &known);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each step saw, in the order the steps ran.
    #[derive(Default)]
    struct Log(std::cell::RefCell<Vec<(char, usize)>>);

    /// A lookup: its event and the steps it went through.
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Lookup {
        event: usize,
        steps: u8,
    }

    #[test]
    fn every_event_goes_through_every_step_in_order_before_it_is_applied() {
        // Runs shorter than each distance, at each distance, and longer than the ring.
        for n in 0..3 * AHEAD + 2 {
            let mut log = Log::default();
            let none = Lookup { event: usize::MAX, steps: 0 };
            let evs: Vec<usize> = (0..n).collect();
            run(
                &mut log,
                &evs,
                none,
                |l, &j| {
                    l.0.borrow_mut().push(('s', j));
                    Lookup { event: j, steps: 1 }
                },
                |l, a| {
                    assert_eq!(a.steps, 1, "probed once, after sight (n = {n})");
                    l.0.borrow_mut().push(('p', a.event));
                    a.steps = 2;
                },
                |l, a| {
                    assert_eq!(a.steps, 2, "resolved once, after probe (n = {n})");
                    l.0.borrow_mut().push(('r', a.event));
                    a.steps = 3;
                },
                |l, &j, &a| {
                    assert_eq!(a, Lookup { event: j, steps: 3 }, "applied with its own lookup");
                    l.0.borrow_mut().push(('a', j));
                },
            );
            let log = log.0.into_inner();
            let applied: Vec<usize> =
                log.iter().filter(|(s, _)| *s == 'a').map(|&(_, j)| j).collect();
            assert_eq!(applied, (0..n).collect::<Vec<_>>(), "every event applied, in order");
            for j in 0..n {
                let at = |step: char| log.iter().position(|&e| e == (step, j));
                let (s, p, r, a) = (at('s'), at('p'), at('r'), at('a'));
                assert!(
                    s.is_some() && s < p && p < r && r < a,
                    "event {j} of {n}: {s:?} {p:?} {r:?} {a:?}"
                );
            }
            // Each step runs its distance ahead: in the same turn as the application of
            // the event that distance before (after the one before that).
            let pos = |e: (char, usize)| log.iter().position(|&x| x == e);
            for j in 1..n {
                for (step, ahead) in [('s', AHEAD), ('p', PROBE), ('r', RESOLVE)] {
                    if j + ahead < n {
                        let at = pos((step, j + ahead));
                        assert!(pos(('a', j - 1)) < at && at < pos(('a', j)), "{step} of {j}");
                    }
                }
            }
        }
    }
}
