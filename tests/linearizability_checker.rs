//! Unit tests of the linearizability checker used by the store's fault tests.

#[path = "support/linearizability.rs"]
mod linearizability;

use linearizability::*;

// ---------------------------------------------------------------------------------------------
// Helpers to write histories by hand.

fn op(client: usize, key: &str, kind: OpKind, call: u64, ret: u64, result: OpResult) -> Operation {
    Operation {
        client,
        key: key.to_string(),
        kind,
        call,
        ret,
        result,
    }
}

fn get(client: usize, call: u64, ret: u64, seen: Option<u64>) -> Operation {
    op(client, "k", OpKind::Get, call, ret, OpResult::Get(seen))
}

fn put(client: usize, call: u64, ret: u64, value: u64) -> Operation {
    op(client, "k", OpKind::Put { value }, call, ret, OpResult::Put)
}

fn cas(client: usize, call: u64, ret: u64, expected: Option<u64>, new: u64, ok: bool) -> Operation {
    op(
        client,
        "k",
        OpKind::Cas { expected, new },
        call,
        ret,
        OpResult::Cas(ok),
    )
}

/// An operation that got no answer; its `ret` is deliberately nonsense to show it is ignored.
fn unanswered(client: usize, call: u64, kind: OpKind) -> Operation {
    op(client, "k", kind, call, 0, OpResult::Unknown)
}

fn on_key(key: &str, mut operation: Operation) -> Operation {
    operation.key = key.to_string();
    operation
}

fn assert_violation(history: &[Operation], key: &str) -> String {
    match check(history) {
        Verdict::Violation {
            key: found,
            explanation,
        } => {
            assert_eq!(found, key);
            explanation
        }
        other => panic!("expected a violation on {key:?}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written histories.

#[test]
fn empty_history_is_linearizable() {
    assert_eq!(check(&[]), Verdict::Linearizable);
}

#[test]
fn sequential_history_is_linearizable() {
    let history = [
        get(0, 0, 1, None),
        put(0, 2, 3, 1),
        get(1, 4, 5, Some(1)),
        cas(0, 6, 7, Some(1), 2, true),
        get(1, 8, 9, Some(2)),
        cas(1, 10, 11, Some(1), 3, false),
        cas(0, 12, 13, None, 4, false),
        get(0, 14, 15, Some(2)),
    ];
    assert_eq!(check(&history), Verdict::Linearizable);
}

#[test]
fn stale_read_after_acknowledged_write_is_a_violation() {
    let history = [put(0, 0, 10, 1), put(0, 20, 30, 2), get(1, 40, 50, Some(1))];
    let explanation = assert_violation(&history, "k");
    // The explanation names the read that could not be placed and the state it contradicts.
    assert!(
        explanation.contains("#2 client 1: get = 1"),
        "{explanation}"
    );
    assert!(explanation.contains("while the key is 2"), "{explanation}");
}

#[test]
fn concurrent_read_may_see_either_value() {
    let before = put(0, 0, 10, 1);
    let write = put(0, 20, 40, 2);
    for seen in [1, 2] {
        let history = [before.clone(), write.clone(), get(1, 25, 35, Some(seen))];
        assert_eq!(check(&history), Verdict::Linearizable, "read saw {seen}");
    }
    let history = [before, write, get(1, 25, 35, Some(3))];
    assert_violation(&history, "k");
}

#[test]
fn reads_during_a_write_cannot_go_back_in_time() {
    // Both reads overlap the write, but the second starts after the first returned the new
    // value, so it cannot see the old one any more.
    let history = [
        put(0, 0, 10, 1),
        put(0, 20, 100, 2),
        get(1, 30, 40, Some(2)),
        get(2, 50, 60, Some(1)),
    ];
    assert_violation(&history, "k");
}

#[test]
fn equal_timestamps_count_as_concurrent() {
    // Returning at the instant the read is sent does not order the write before the read.
    let history = [put(0, 0, 10, 1), get(1, 10, 20, None)];
    assert_eq!(check(&history), Verdict::Linearizable);
    let history = [put(0, 0, 10, 1), get(1, 11, 20, None)];
    assert_violation(&history, "k");
}

#[test]
fn lost_acknowledged_write_is_detected() {
    let history = [
        put(0, 0, 10, 1),
        put(1, 5, 15, 2),
        get(2, 20, 30, Some(2)),
        // Both writes were acknowledged, yet the key reads as absent afterwards.
        get(2, 40, 50, None),
    ];
    let explanation = assert_violation(&history, "k");
    assert!(explanation.contains("get = absent"), "{explanation}");
}

#[test]
fn unknown_put_may_take_effect_late_or_never() {
    let acknowledged = put(0, 0, 10, 1);
    let lost = unanswered(1, 20, OpKind::Put { value: 2 });

    // Late: long after the client gave up.
    let late = [
        acknowledged.clone(),
        lost.clone(),
        get(2, 30, 40, Some(1)),
        get(2, 500, 510, Some(1)),
        get(2, 600, 610, Some(2)),
        get(2, 700, 710, Some(2)),
    ];
    assert_eq!(check(&late), Verdict::Linearizable);

    // Never.
    let never = [
        acknowledged.clone(),
        lost.clone(),
        get(2, 30, 40, Some(1)),
        get(2, 600, 610, Some(1)),
    ];
    assert_eq!(check(&never), Verdict::Linearizable);

    // But not before it was sent...
    let early = [acknowledged.clone(), get(2, 12, 15, Some(2)), lost.clone()];
    assert_violation(&early, "k");

    // ...and not undone once seen.
    let undone = [
        acknowledged,
        lost,
        get(2, 30, 40, Some(2)),
        get(2, 50, 60, Some(1)),
    ];
    assert_violation(&undone, "k");
}

#[test]
fn unknown_cas_takes_effect_only_if_expected_matches() {
    let lost_cas = unanswered(
        1,
        20,
        OpKind::Cas {
            expected: Some(1),
            new: 2,
        },
    );
    let history = [put(0, 0, 10, 1), lost_cas.clone(), get(2, 30, 40, Some(2))];
    assert_eq!(check(&history), Verdict::Linearizable);

    let history = [put(0, 0, 10, 3), lost_cas.clone(), get(2, 30, 40, Some(2))];
    assert_violation(&history, "k");

    // It may still take effect once a later write makes `expected` current.
    let history = [
        put(0, 0, 10, 3),
        lost_cas,
        put(0, 30, 40, 1),
        get(2, 50, 60, Some(2)),
    ];
    assert_eq!(check(&history), Verdict::Linearizable);
}

#[test]
fn unknown_reads_are_ignored() {
    let history = [
        put(0, 0, 10, 1),
        unanswered(1, 0, OpKind::Get),
        get(2, 20, 30, Some(1)),
    ];
    assert_eq!(check(&history), Verdict::Linearizable);
}

#[test]
fn cas_results_must_match_the_model() {
    // Succeeds only when the current value equals `expected`, absent included.
    assert_eq!(
        check(&[cas(0, 0, 1, None, 1, true), get(0, 2, 3, Some(1))]),
        Verdict::Linearizable
    );
    assert_violation(&[cas(0, 0, 1, None, 1, false)], "k");
    assert_violation(&[put(0, 0, 1, 1), cas(0, 2, 3, Some(5), 6, true)], "k");
    assert_violation(&[put(0, 0, 1, 1), cas(0, 2, 3, Some(1), 6, false)], "k");
    // A failed swap changes nothing.
    assert_violation(
        &[
            put(0, 0, 1, 1),
            cas(0, 2, 3, Some(5), 6, false),
            get(0, 4, 5, Some(6)),
        ],
        "k",
    );
    // Two concurrent swaps from the same value cannot both succeed.
    assert_violation(
        &[
            put(0, 0, 1, 1),
            cas(1, 10, 20, Some(1), 2, true),
            cas(2, 10, 20, Some(1), 3, true),
        ],
        "k",
    );
    // But one may succeed and the other fail, in either order.
    assert_eq!(
        check(&[
            put(0, 0, 1, 1),
            cas(1, 10, 20, Some(1), 2, false),
            cas(2, 10, 20, Some(1), 3, true),
            get(0, 30, 40, Some(3)),
        ]),
        Verdict::Linearizable
    );
}

#[test]
fn mismatched_result_is_reported_as_malformed() {
    let history = [op(0, "k", OpKind::Get, 0, 1, OpResult::Put)];
    let explanation = assert_violation(&history, "k");
    assert!(explanation.contains("malformed"), "{explanation}");
}

#[test]
fn keys_are_checked_independently() {
    // As one register this would be a lost write; as two keys it is fine.
    let history = [
        on_key("a", put(0, 0, 10, 1)),
        on_key("b", get(1, 20, 30, None)),
        on_key("a", get(1, 40, 50, Some(1))),
    ];
    assert_eq!(check(&history), Verdict::Linearizable);

    // A violation is attributed to its own key, whatever the others do.
    let history = [
        on_key("a", put(0, 0, 10, 1)),
        on_key("b", put(0, 0, 10, 7)),
        on_key("b", get(1, 20, 30, Some(1))),
        on_key("c", get(1, 20, 30, None)),
    ];
    assert_violation(&history, "b");
}

/// Sixteen acknowledged writes all overlapping each other, then a read of a value none of
/// them wrote: refuting it means trying every subset of the writes, 2^16 configurations.
fn hard_violation() -> Vec<Operation> {
    let mut history: Vec<Operation> = (0..16)
        .map(|value| put(value as usize, value, 100 + value, value))
        .collect();
    history.push(get(99, 1_000, 1_010, Some(1_000)));
    history
}

#[test]
fn budget_exhaustion_reports_gave_up() {
    let mut history = hard_violation();
    history.push(on_key("fine", put(0, 0, 1, 1)));
    assert_eq!(
        check_with_budget(&history, 10_000),
        Verdict::GaveUp {
            key: "k".to_string()
        }
    );
    // With enough budget the same history is refuted.
    assert_violation(&history, "k");

    // Even a trivial history needs one state per operation.
    let history = [
        put(0, 0, 1, 1),
        get(0, 2, 3, Some(1)),
        get(0, 4, 5, Some(1)),
    ];
    assert_eq!(
        check_with_budget(&history, 2),
        Verdict::GaveUp {
            key: "k".to_string()
        }
    );
    assert_eq!(check_with_budget(&history, 3), Verdict::Linearizable);
}

#[test]
fn violation_outranks_gave_up_on_another_key() {
    let mut history = hard_violation();
    history.push(on_key("z", put(0, 0, 1, 1)));
    history.push(on_key("z", get(0, 2, 3, None)));
    match check_with_budget(&history, 10_000) {
        Verdict::Violation { key, .. } => assert_eq!(key, "z"),
        other => panic!("expected a violation on \"z\", got {other:?}"),
    }
}

#[test]
fn pending_timed_out_writes_do_not_blow_up_the_search() {
    // Twenty writes nobody heard back from could be placed in 2^20 combinations, but none of
    // them explains the final read, and the search must see that almost at once.
    let mut history: Vec<Operation> = (0..20)
        .map(|value| unanswered(value as usize, value, OpKind::Put { value }))
        .collect();
    history.push(get(99, 1_000, 1_010, Some(1_000)));
    assert!(matches!(
        check_with_budget(&history, 100),
        Verdict::Violation { .. }
    ));
    // One of them does explain it, wherever it sits among the others.
    history.push(unanswered(50, 500, OpKind::Put { value: 1_000 }));
    history.extend((0..20).map(|value| {
        unanswered(
            60,
            600 + value,
            OpKind::Put {
                value: 2_000 + value,
            },
        )
    }));
    assert_eq!(check_with_budget(&history, 100), Verdict::Linearizable);
}

// ---------------------------------------------------------------------------------------------
// Random histories from a simulated atomic register.

/// xorshift64: tiny, deterministic, good enough to shuffle test schedules.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn percent(&mut self, chance: u64) -> bool {
        self.below(100) < chance
    }
}

struct Workload {
    clients: usize,
    keys: usize,
    operations: usize,
    /// Chance that a request gets no answer.
    unknown_percent: u64,
}

/// A request in flight.
struct InFlight {
    key: usize,
    kind: OpKind,
    call: u64,
    lost: bool,
}

enum Client {
    Idle,
    Waiting(InFlight),
    /// Took effect at some point already; the answer is on its way.
    Answered(InFlight, OpResult),
}

/// The reference implementation: an atomic register per key.
fn take_effect(register: &mut Option<u64>, kind: &OpKind) -> OpResult {
    match kind {
        OpKind::Get => OpResult::Get(*register),
        OpKind::Put { value } => {
            *register = Some(*value);
            OpResult::Put
        }
        OpKind::Cas { expected, new } => {
            let swapped = *register == *expected;
            if swapped {
                *register = Some(*new);
            }
            OpResult::Cas(swapped)
        }
    }
}

/// Runs random clients against atomic registers: every operation takes effect at one instant
/// between its call and its return, so the history is linearizable by construction. Every
/// written value is unique. Unanswered operations take effect before the client gives up,
/// later (even after the client's next operations), or never.
fn simulate(seed: u64, workload: &Workload) -> Vec<Operation> {
    let mut rng = Rng::new(seed);
    let mut registers = vec![None; workload.keys];
    let mut clients: Vec<Client> = (0..workload.clients).map(|_| Client::Idle).collect();
    let mut limbo: Vec<(usize, OpKind)> = Vec::new();
    let mut seen = vec![vec![None; workload.keys]; workload.clients];
    let mut history = Vec::new();
    let mut started = 0;
    let mut next_value = 1;
    let mut now = 0;

    loop {
        // Sometimes two events share a timestamp, which must count as concurrency.
        now += rng.below(2);
        if !limbo.is_empty() && rng.percent(3) {
            let (key, kind) = limbo.swap_remove(rng.index(limbo.len()));
            take_effect(&mut registers[key], &kind);
        }
        let client = rng.index(clients.len());
        clients[client] = match std::mem::replace(&mut clients[client], Client::Idle) {
            Client::Idle if started < workload.operations => {
                started += 1;
                let key = rng.index(workload.keys);
                let kind =
                    random_kind(&mut rng, registers[key], seen[client][key], &mut next_value);
                Client::Waiting(InFlight {
                    key,
                    kind,
                    call: now,
                    lost: rng.percent(workload.unknown_percent),
                })
            }
            Client::Idle => Client::Idle,
            Client::Waiting(request) if request.lost => {
                // The client times out; the request took effect already, still might, or never will.
                match rng.below(3) {
                    0 => {
                        take_effect(&mut registers[request.key], &request.kind);
                    }
                    1 => limbo.push((request.key, request.kind.clone())),
                    _ => {}
                }
                history.push(record(client, &request, now, OpResult::Unknown));
                Client::Idle
            }
            Client::Waiting(request) => {
                let result = take_effect(&mut registers[request.key], &request.kind);
                Client::Answered(request, result)
            }
            Client::Answered(request, result) => {
                match (&request.kind, &result) {
                    (_, OpResult::Get(value)) => seen[client][request.key] = *value,
                    (OpKind::Put { value }, _) => seen[client][request.key] = Some(*value),
                    (OpKind::Cas { new, .. }, OpResult::Cas(true)) => {
                        seen[client][request.key] = Some(*new)
                    }
                    _ => {}
                }
                history.push(record(client, &request, now, result));
                Client::Idle
            }
        };
        if started == workload.operations && clients.iter().all(|c| matches!(c, Client::Idle)) {
            return history;
        }
    }
}

/// A random request; `current` is the register's value and `seen` the last value this client
/// learnt about the key.
fn random_kind(
    rng: &mut Rng,
    current: Option<u64>,
    seen: Option<u64>,
    next_value: &mut u64,
) -> OpKind {
    let fresh = *next_value;
    match rng.below(10) {
        0..=2 => OpKind::Get,
        3..=5 => {
            *next_value += 1;
            OpKind::Put { value: fresh }
        }
        choice => {
            // Mostly the value at call time (it may change before the swap happens), sometimes
            // absent or whatever the client saw last, so swaps both succeed and fail.
            let expected = match choice {
                6 | 7 => current,
                8 => None,
                _ => seen,
            };
            *next_value += 1;
            OpKind::Cas {
                expected,
                new: fresh,
            }
        }
    }
}

fn record(client: usize, request: &InFlight, now: u64, result: OpResult) -> Operation {
    Operation {
        client,
        key: format!("key-{}", request.key),
        kind: request.kind.clone(),
        call: request.call,
        ret: now,
        result,
    }
}

#[test]
fn random_histories_from_an_atomic_register_are_linearizable() {
    for seed in 0..100 {
        let workload = Workload {
            clients: 2 + (seed as usize % 7),
            keys: 1 + (seed as usize % 3),
            operations: 300,
            unknown_percent: 10,
        };
        let history = simulate(seed, &workload);
        assert_eq!(check(&history), Verdict::Linearizable, "seed {seed}");
    }
}

/// How a read was made impossible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mutation {
    /// Its writer was called only after the read returned.
    FutureValue,
    /// Its writer finished before another acknowledged write that finished before the read.
    OverwrittenValue,
    /// The key was acknowledged written before the read, and nothing deletes.
    Absent,
    /// No operation ever wrote it.
    NeverWritten,
}

const ALL_MUTATIONS: [Mutation; 4] = [
    Mutation::FutureValue,
    Mutation::OverwrittenValue,
    Mutation::Absent,
    Mutation::NeverWritten,
];

/// Whether `op` is a write that is known to have taken effect, and is the only source of its value.
fn acknowledged_write(op: &Operation) -> bool {
    matches!(
        (&op.kind, &op.result),
        (OpKind::Put { .. }, OpResult::Put) | (OpKind::Cas { .. }, OpResult::Cas(true))
    )
}

fn written_value(op: &Operation) -> Option<u64> {
    match op.kind {
        OpKind::Get => None,
        OpKind::Put { value } => Some(value),
        OpKind::Cas { new, .. } => Some(new),
    }
}

/// Values the read at `read` provably cannot return in any linearization, given that every
/// value is written by at most one operation (the simulation guarantees it).
fn impossible_values(history: &[Operation], read: &Operation) -> Vec<(Mutation, Option<u64>)> {
    let mut impossible = vec![(Mutation::NeverWritten, Some(u64::MAX))];
    let before_read = |op: &Operation| op.result != OpResult::Unknown && op.ret < read.call;
    let same_key = || history.iter().filter(|op| op.key == read.key);
    if same_key().any(|op| acknowledged_write(op) && before_read(op)) {
        impossible.push((Mutation::Absent, None));
    }
    for writer in same_key() {
        let Some(value) = written_value(writer) else {
            continue;
        };
        // Its only writer must be linearized after the read.
        if writer.call > read.ret {
            impossible.push((Mutation::FutureValue, Some(value)));
        }
        // Its only writer must be linearized before another write that precedes the read.
        let answered = writer.result != OpResult::Unknown;
        if answered
            && same_key().any(|other| {
                acknowledged_write(other) && writer.ret < other.call && before_read(other)
            })
        {
            impossible.push((Mutation::OverwrittenValue, Some(value)));
        }
    }
    impossible
}

#[test]
fn mutated_random_histories_are_rejected() {
    let mut used = Vec::new();
    for seed in 0..60 {
        let workload = Workload {
            clients: 2 + (seed as usize % 7),
            keys: 1,
            operations: 200,
            unknown_percent: 10,
        };
        let mut history = simulate(1_000 + seed, &workload);
        assert_eq!(check(&history), Verdict::Linearizable, "seed {seed}");

        let mut candidates = Vec::new();
        for (read, operation) in history.iter().enumerate() {
            if matches!(operation.result, OpResult::Get(_)) {
                for (mutation, value) in impossible_values(&history, operation) {
                    candidates.push((read, mutation, value));
                }
            }
        }
        // Rotate through the kinds of mutation so that the rarer ones get exercised too.
        let wanted = ALL_MUTATIONS[seed as usize % ALL_MUTATIONS.len()];
        let of_kind: Vec<_> = candidates.iter().filter(|c| c.1 == wanted).collect();
        let pool: Vec<_> = if of_kind.is_empty() {
            candidates.iter().collect()
        } else {
            of_kind
        };
        assert!(!pool.is_empty(), "seed {seed} has no answered reads");
        let mut rng = Rng::new(seed);
        let &(read, mutation, value) = pool[rng.index(pool.len())];
        assert_ne!(history[read].result, OpResult::Get(value), "seed {seed}");
        history[read].result = OpResult::Get(value);
        used.push(mutation);

        match check(&history) {
            Verdict::Violation { key, explanation } => {
                assert_eq!(key, "key-0");
                assert!(
                    explanation.contains(&format!("#{read} ")),
                    "seed {seed}: the explanation should name the mutated read #{read}:\n{explanation}"
                );
            }
            other => panic!("seed {seed}: {mutation:?} read #{read} gave {other:?}"),
        }
    }
    for mutation in ALL_MUTATIONS {
        assert!(used.contains(&mutation), "{mutation:?} never exercised");
    }
}

#[test]
fn long_single_key_history_checks_quickly() {
    let workload = Workload {
        clients: 5,
        keys: 1,
        operations: 2_000,
        unknown_percent: 2,
    };
    let history = simulate(42, &workload);
    assert_eq!(history.len(), 2_000);
    assert_eq!(check(&history), Verdict::Linearizable);
}

// ---------------------------------------------------------------------------------------------
// Cross-check against exhaustive search on tiny histories.

/// Tries every order of the operations: the definition of linearizability, without any cleverness.
fn brute_force(ops: &[Operation]) -> bool {
    // Unanswered reads constrain nothing; everything else must be placed (an unanswered write
    // placed last is the same as one that never happened).
    let ops: Vec<&Operation> = ops
        .iter()
        .filter(|op| !(op.kind == OpKind::Get && op.result == OpResult::Unknown))
        .collect();
    let mut placed = vec![false; ops.len()];
    place_rest(&ops, &mut placed, None)
}

fn place_rest(ops: &[&Operation], placed: &mut [bool], state: Option<u64>) -> bool {
    if placed.iter().all(|&p| p) {
        return true;
    }
    for next in 0..ops.len() {
        if placed[next] {
            continue;
        }
        // Every unplaced operation that returned before `next` was called must come first.
        let must_wait = (0..ops.len()).any(|other| {
            !placed[other]
                && other != next
                && ops[other].result != OpResult::Unknown
                && ops[other].ret.max(ops[other].call) < ops[next].call
        });
        if must_wait {
            continue;
        }
        let Some(after) = reference_step(state, ops[next]) else {
            continue;
        };
        placed[next] = true;
        let found = place_rest(ops, placed, after);
        placed[next] = false;
        if found {
            return true;
        }
    }
    false
}

/// The model again, written independently of the checker's.
fn reference_step(state: Option<u64>, op: &Operation) -> Option<Option<u64>> {
    let mut register = state;
    let outcome = take_effect(&mut register, &op.kind);
    match (&op.result, outcome) {
        (OpResult::Unknown, _) => Some(register),
        (seen, actual) if *seen == actual => Some(register),
        _ => None,
    }
}

/// Up to eight operations on one key with overlapping windows. Reads and swaps compare against
/// few values so that they often match, while writes also use values nobody compares against;
/// many operations get no answer.
fn random_tiny_history(rng: &mut Rng) -> Vec<Operation> {
    let count = 1 + rng.index(8);
    (0..count)
        .map(|client| {
            let call = rng.below(20);
            let ret = call + rng.below(12);
            let compared = |rng: &mut Rng| match rng.below(4) {
                0 => None,
                n => Some(n),
            };
            let written = 1 + rng.below(6);
            let (kind, result) = match rng.below(3) {
                0 => (OpKind::Get, OpResult::Get(compared(rng))),
                1 => (OpKind::Put { value: written }, OpResult::Put),
                _ => (
                    OpKind::Cas {
                        expected: compared(rng),
                        new: written,
                    },
                    OpResult::Cas(rng.percent(50)),
                ),
            };
            let result = if rng.percent(30) {
                OpResult::Unknown
            } else {
                result
            };
            op(client, "k", kind, call, ret, result)
        })
        .collect()
}

#[test]
fn agrees_with_brute_force_on_tiny_random_histories() {
    let mut rng = Rng::new(7);
    let (mut linearizable, mut violations) = (0, 0);
    for round in 0..20_000 {
        let history = random_tiny_history(&mut rng);
        let expected = brute_force(&history);
        let verdict = check(&history);
        match (&verdict, expected) {
            (Verdict::Linearizable, true) => linearizable += 1,
            (Verdict::Violation { .. }, false) => violations += 1,
            _ => panic!(
                "round {round}: checker says {verdict:?}, brute force says {expected} for {history:#?}"
            ),
        }
    }
    // Both outcomes must be well represented for the comparison to mean anything.
    assert!(
        linearizable > 2_000 && violations > 2_000,
        "{linearizable} / {violations}"
    );
}
