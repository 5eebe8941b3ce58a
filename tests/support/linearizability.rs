//! Linearizability checker for a key-value register model, used by the store's fault tests.
//!
//! Every key is an independent register (P-compositionality), initially absent, supporting
//! `get`, blind `put` and compare-and-swap. Each key's history is checked with the search of
//! Wing & Gong, made practical by Lowe's memoisation ("Testing for linearizability", 2017),
//! the same algorithm porcupine and knossos use:
//!
//! * The history becomes a doubly-linked list of call and return events sorted by time.
//! * Scanning from the front, any operation whose call comes before the first return still in
//!   the list may be linearized next. If the model accepts it, both of its events are lifted
//!   out of the list and the scan restarts; reaching a return means the operation it belongs
//!   to was not linearized in time, so the last choice is undone (unlifted) and the scan moves
//!   on to the next candidate.
//! * A configuration is the set of linearized operations plus the model's state. The rest of
//!   the search depends on nothing else, so a configuration known to fail is never explored
//!   again.
//!
//! Operations without an answer (timeouts while leaders die) never return, so they stay
//! candidates forever, and a plain search tries every subset of them at every step. Three
//! refinements keep that in check without losing any linearization; each is explained where it
//! is implemented:
//!
//! * unanswered operations are only placed right before an operation that needs their effect
//!   (`Search::try_linearize`);
//! * a failure without some unanswered operations also rules out the same configuration with
//!   them (`Failures`), and interchangeable unanswered operations are only tried in call order
//!   (`twins`);
//! * values nobody reads are all the same to the model (`Model`).
//!
//! Backtracking uses an explicit stack, so deep histories cannot overflow the call stack, and
//! the number of explored configurations is bounded by a budget that turns into
//! [`Verdict::GaveUp`] instead of an endless search.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

/// Per-key budget used by [`check`], in explored configurations.
pub const DEFAULT_BUDGET: u64 = 1_000_000;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Read the key.
    Get,
    /// Blind write.
    Put { value: u64 },
    /// Write `new` if the current value equals `expected` (None = key absent).
    Cas { expected: Option<u64>, new: u64 },
}

/// What the client saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    Get(Option<u64>),
    Put,
    Cas(bool),
    /// No answer (timeout, connection lost): the operation may or may not have taken effect, at any time after `call`.
    Unknown,
}

/// One operation of a client, as recorded by the test.
#[derive(Clone, Debug)]
pub struct Operation {
    pub client: usize,
    pub key: String,
    pub kind: OpKind,
    /// Nanoseconds since the start of the test when the request was sent.
    pub call: u64,
    /// Nanoseconds when the answer arrived (ignored when result is Unknown).
    pub ret: u64,
    pub result: OpResult,
}

/// Outcome of a check.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// A key whose history has no linearization, with a human-readable explanation (the operations involved, e.g. the longest linearizable prefix found and the operations that could not be placed).
    Violation {
        key: String,
        explanation: String,
    },
    /// The search exceeded its budget for a key; says which.
    GaveUp {
        key: String,
    },
}

/// Checks a whole history; keys are checked independently (P-compositionality). Initial state of every key: absent.
pub fn check(history: &[Operation]) -> Verdict {
    check_with_budget(history, DEFAULT_BUDGET)
}

/// Same with an explicit per-key search budget (number of explored states).
///
/// Keys are checked in lexicographic order. A violation is reported as soon as one is found,
/// since it is more useful than an inconclusive key; otherwise the first key that exhausted
/// its budget is reported.
pub fn check_with_budget(history: &[Operation], budget: u64) -> Verdict {
    let mut first_gave_up = None;
    for (key, indices) in operations_by_key(history) {
        match check_key(history, key, &indices, budget) {
            Verdict::Linearizable => {}
            violation @ Verdict::Violation { .. } => return violation,
            gave_up @ Verdict::GaveUp { .. } => {
                first_gave_up.get_or_insert(gave_up);
            }
        }
    }
    first_gave_up.unwrap_or(Verdict::Linearizable)
}

/// The value of one key in the model: `None` while the key is absent.
type State = Option<u64>;

/// Marks the end of the event list.
const NIL: usize = usize::MAX;

/// Index of the sentinel node that sits before the first event.
const HEAD: usize = 0;

/// How many operations of the longest prefix an explanation shows (the last ones).
const PREFIX_SHOWN: usize = 12;

/// How many unanswered candidates an explanation lists (there can be many pending ones).
const UNANSWERED_SHOWN: usize = 5;

/// Indices into `history` of each key's operations, keys in lexicographic order.
fn operations_by_key(history: &[Operation]) -> BTreeMap<&str, Vec<usize>> {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        // An unanswered read observed nothing and changed nothing, so it constrains nothing.
        if op.kind == OpKind::Get && op.result == OpResult::Unknown {
            continue;
        }
        by_key.entry(op.key.as_str()).or_default().push(index);
    }
    by_key
}

/// An operation of one key together with its position in the whole history (for messages).
#[derive(Clone, Copy)]
struct Indexed<'a> {
    index: usize,
    op: &'a Operation,
}

impl Indexed<'_> {
    /// Whether the client got an answer, i.e. the operation has a deadline to take effect by.
    fn is_known(&self) -> bool {
        self.op.result != OpResult::Unknown
    }
}

/// Checks the operations of a single key.
fn check_key(history: &[Operation], key: &str, indices: &[usize], budget: u64) -> Verdict {
    let ops: Vec<Indexed> = indices
        .iter()
        .filter_map(|&index| history.get(index).map(|op| Indexed { index, op }))
        .collect();
    // A result of the wrong shape can never be explained by the model; saying so directly is
    // clearer than reporting the search's dead end.
    if let Some(bad) = ops.iter().find(|entry| !result_fits_kind(entry.op)) {
        return Verdict::Violation {
            key: key.to_string(),
            explanation: format!(
                "malformed operation: its result does not match its kind: {}",
                describe(*bad)
            ),
        };
    }
    let mut search = Search::new(&ops, budget);
    match search.run() {
        Outcome::Linearizable => Verdict::Linearizable,
        Outcome::GaveUp => Verdict::GaveUp {
            key: key.to_string(),
        },
        Outcome::Violation => Verdict::Violation {
            key: key.to_string(),
            explanation: search.explain(key),
        },
    }
}

/// Whether the result has the shape the request calls for.
fn result_fits_kind(op: &Operation) -> bool {
    matches!(
        (&op.kind, &op.result),
        (_, OpResult::Unknown)
            | (OpKind::Get, OpResult::Get(_))
            | (OpKind::Put { .. }, OpResult::Put)
            | (OpKind::Cas { .. }, OpResult::Cas(_))
    )
}

/// The register model: the state after `op` takes effect in `state`, or `None` if what the
/// client saw is impossible in `state`.
fn apply(state: State, op: &Operation) -> Option<State> {
    match (&op.kind, &op.result) {
        (OpKind::Get, OpResult::Get(seen)) => (*seen == state).then_some(state),
        (OpKind::Put { value }, OpResult::Put | OpResult::Unknown) => Some(Some(*value)),
        (OpKind::Cas { expected, new }, OpResult::Cas(true)) => {
            (*expected == state).then_some(Some(*new))
        }
        (OpKind::Cas { expected, .. }, OpResult::Cas(false)) => {
            (*expected != state).then_some(state)
        }
        // Nobody saw the outcome, so the swap simply happens if it can.
        (OpKind::Cas { expected, new }, OpResult::Unknown) => Some(if *expected == state {
            Some(*new)
        } else {
            state
        }),
        // Unanswered reads are dropped before the search; mismatched shapes are rejected.
        _ => None,
    }
}

/// The register model of one key, abstracted for the search.
///
/// Values that no operation reads or compares against are indistinguishable: every `get` and
/// every swap behaves the same in all of them. They are all replaced by one stand-in, so that
/// states differing only in such a value (typically writes that timed out and were never seen)
/// count as the same configuration.
struct Model {
    compared: HashSet<u64>,
    stand_in: u64,
}

impl Model {
    fn new(ops: &[Indexed]) -> Self {
        let compared: HashSet<u64> = ops
            .iter()
            .filter_map(|entry| match (&entry.op.kind, &entry.op.result) {
                (OpKind::Cas { expected, .. }, _) => *expected,
                (_, OpResult::Get(seen)) => *seen,
                _ => None,
            })
            .collect();
        // Any value nobody compares against will do; there are only as many compared values
        // as operations, so this stops quickly.
        let stand_in = (0..=u64::MAX)
            .rev()
            .find(|value| !compared.contains(value))
            .unwrap_or(u64::MAX);
        Model { compared, stand_in }
    }

    /// The abstract state after `op` takes effect in `state`, or `None` if what the client saw
    /// is impossible in `state`.
    fn step(&self, state: State, op: &Operation) -> Option<State> {
        apply(state, op).map(|next| self.canonical(next))
    }

    fn canonical(&self, state: State) -> State {
        match state {
            Some(value) if !self.compared.contains(&value) => Some(self.stand_in),
            other => other,
        }
    }

    /// Whether somebody reads or compares against what `op` writes.
    fn writes_compared_value(&self, op: &Operation) -> bool {
        match op.kind {
            OpKind::Get => false,
            OpKind::Put { value } | OpKind::Cas { new: value, .. } => {
                self.compared.contains(&value)
            }
        }
    }
}

/// For each unanswered operation, the previous unanswered operation (in call order) that has
/// exactly the same effect in the abstract model, if any.
///
/// Such twins are interchangeable once both have been called, so the search only ever lets the
/// earlier one go first: the later one waits for it. Without this, k timed-out writes of values
/// nobody read would give k different but equivalent choices at every step.
fn twins(ops: &[Indexed], model: &Model) -> Vec<Option<usize>> {
    let mut unanswered: Vec<usize> = (0..ops.len()).filter(|&op| !ops[op].is_known()).collect();
    // Same order as calls in the event list.
    unanswered.sort_by_key(|&op| (ops[op].op.call, op));
    let mut last_with_effect: HashMap<(bool, State, State), usize> = HashMap::new();
    let mut waits_for = vec![None; ops.len()];
    for op in unanswered {
        let effect = match ops[op].op.kind {
            OpKind::Get => continue,
            OpKind::Put { value } => (false, None, model.canonical(Some(value))),
            OpKind::Cas { expected, new } => (true, expected, model.canonical(Some(new))),
        };
        waits_for[op] = last_with_effect.insert(effect, op);
    }
    waits_for
}

/// One call or return event in the linked list.
struct Node {
    /// Index of the operation in the key's operation list.
    op: usize,
    is_call: bool,
    /// For a call, its return node; `NIL` for operations that never returned.
    ret: usize,
    prev: usize,
    next: usize,
}

/// The key's events in time order, as a doubly-linked list from which an operation's events
/// can be lifted and later put back exactly where they were (dancing links).
struct EventList {
    nodes: Vec<Node>,
}

impl EventList {
    /// Builds the list. Calls sort before returns at equal times, so an operation that returns
    /// at the instant another is called counts as concurrent with it: precedence requires
    /// `ret < call` strictly. Unanswered operations get no return event at all: their return
    /// is at +infinity, after every answered operation's, so the scan can never reach it.
    fn new(ops: &[Indexed]) -> Self {
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (op, entry) in ops.iter().enumerate() {
            // `false` sorts before `true`: calls first at equal times.
            events.push((entry.op.call, false, op));
            if entry.is_known() {
                // An answer cannot arrive before its request; clamp bad clocks to a zero-length
                // window rather than create a return that precedes its own call.
                events.push((entry.op.ret.max(entry.op.call), true, op));
            }
        }
        events.sort_unstable();

        let mut nodes = Vec::with_capacity(events.len() + 1);
        nodes.push(Node {
            op: NIL,
            is_call: false,
            ret: NIL,
            prev: NIL,
            next: NIL,
        });
        let mut call_node = vec![NIL; ops.len()];
        for (position, &(_, is_return, op)) in events.iter().enumerate() {
            let id = position + 1;
            nodes.push(Node {
                op,
                is_call: !is_return,
                ret: NIL,
                prev: id - 1,
                next: if id == events.len() { NIL } else { id + 1 },
            });
            if is_return {
                nodes[call_node[op]].ret = id;
            } else {
                call_node[op] = id;
            }
        }
        if !events.is_empty() {
            nodes[HEAD].next = 1;
        }
        EventList { nodes }
    }

    /// The first event still in the list, or `NIL`.
    fn first(&self) -> usize {
        self.nodes[HEAD].next
    }

    fn next(&self, node: usize) -> usize {
        self.nodes[node].next
    }

    /// Whether `node` is a call event (`NIL` is not).
    fn is_call(&self, node: usize) -> bool {
        node != NIL && self.nodes[node].is_call
    }

    fn op(&self, node: usize) -> usize {
        self.nodes[node].op
    }

    /// Removes a call and its return from the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.nodes[call].ret;
        if ret != NIL {
            self.unlink(ret);
        }
    }

    /// Undoes the matching `lift`; lifts must be undone in reverse order.
    fn unlift(&mut self, call: usize) {
        let ret = self.nodes[call].ret;
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }

    /// Unlinks `node` but leaves its own pointers intact so that `relink` can restore it.
    fn unlink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = node;
        if next != NIL {
            self.nodes[next].prev = node;
        }
    }
}

/// A fixed-size bitset.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }

    fn contains(&self, bit: usize) -> bool {
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn is_subset_of(&self, other: &Bits) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .all(|(mine, theirs)| mine & !theirs == 0)
    }

    /// Appends a canonical encoding of the set to `out`, usually much shorter than the words.
    ///
    /// Bits are numbered in call order, and operations are linearized roughly in that order,
    /// so a set is typically "everything below some n" plus a few stragglers: encoded as n
    /// followed by the stragglers. When that is longer than the words, the words are used
    /// instead, behind a marker no n can equal.
    fn encode_into(&self, out: &mut Vec<u64>) {
        let full = self.0.iter().take_while(|&&word| word == u64::MAX).count();
        let below = full * 64 + self.0.get(full).map_or(0, |word| word.trailing_ones()) as usize;
        let start = out.len();
        out.push(below as u64);
        for (index, &word) in self.0.iter().enumerate().skip(below / 64) {
            let mut rest = word;
            while rest != 0 {
                let bit = index * 64 + rest.trailing_zeros() as usize;
                rest &= rest - 1;
                if bit > below {
                    out.push(bit as u64);
                }
            }
            if out.len() - start > self.0.len() {
                out.truncate(start);
                out.push(u64::MAX);
                out.extend_from_slice(&self.0);
                return;
            }
        }
    }
}

/// Everything besides the set of linearized operations that the rest of the search depends on.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Situation {
    /// The abstract model state (see `Model`).
    state: State,
    /// When the last operation linearized was an unanswered one, the state before it: the next
    /// operation must be one that needed it (see `Search::try_linearize`).
    before_unanswered: Option<State>,
}

/// Configurations from which no linearization exists (Lowe's memo, refined).
///
/// A configuration is (answered operations linearized A, unanswered ones U, situation). An
/// unanswered operation never has to be linearized (nothing waits for its return), so any
/// completion from a configuration also works from the same configuration without some of its
/// unanswered operations: if (A, U, s) failed, then so does (A, U', s) for every U' that
/// contains U. Failures are therefore stored under (A, s) as the minimal sets U known to fail.
/// Likewise a configuration right after an unanswered operation only has some of the
/// continuations of the same configuration without that restriction, so a failure of the
/// unrestricted one covers both.
struct Failures {
    by_answered: HashMap<Box<[u64]>, Vec<Bits>>,
    /// Reused buffer for building keys without allocating on every lookup.
    scratch: Vec<u64>,
}

impl Failures {
    fn new() -> Self {
        Failures {
            by_answered: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// Whether (answered, unanswered, situation) is known to fail.
    fn covers(&mut self, answered: &Bits, unanswered: &Bits, situation: Situation) -> bool {
        let unrestricted = Situation {
            before_unanswered: None,
            ..situation
        };
        self.covered_exactly(answered, unanswered, unrestricted)
            || (situation.before_unanswered.is_some()
                && self.covered_exactly(answered, unanswered, situation))
    }

    fn covered_exactly(
        &mut self,
        answered: &Bits,
        unanswered: &Bits,
        situation: Situation,
    ) -> bool {
        self.fill_key(answered, situation);
        self.by_answered
            .get(self.scratch.as_slice())
            .is_some_and(|failed| failed.iter().any(|u| u.is_subset_of(unanswered)))
    }

    /// Remembers that (answered, unanswered, situation) fails.
    fn insert(&mut self, answered: &Bits, unanswered: &Bits, situation: Situation) {
        self.fill_key(answered, situation);
        if let Some(failed) = self.by_answered.get_mut(self.scratch.as_slice()) {
            // Keep only minimal sets: any superset of the new one is now implied by it.
            failed.retain(|u| !unanswered.is_subset_of(u));
            failed.push(unanswered.clone());
        } else {
            self.by_answered
                .insert(self.scratch.as_slice().into(), vec![unanswered.clone()]);
        }
    }

    /// Builds the key of (answered, situation) in `scratch`: the situation in three fixed
    /// words, then the encoded set.
    fn fill_key(&mut self, answered: &Bits, situation: Situation) {
        // Tag bits: 0 = state present, 1 = restricted, 2 = state before present.
        let (present, value) = encode_state(situation.state);
        let (restricted, before) = match situation.before_unanswered {
            None => (0, 0),
            Some(before) => {
                let (present, value) = encode_state(before);
                (0b10 | present << 2, value)
            }
        };
        self.scratch.clear();
        self.scratch.extend([present | restricted, value, before]);
        answered.encode_into(&mut self.scratch);
    }
}

/// A state as a presence flag and a value, for memo keys.
fn encode_state(state: State) -> (u64, u64) {
    match state {
        None => (0, 0),
        Some(value) => (1, value),
    }
}

/// The order in which a scan of the candidates tries them: a scan goes over the candidates once
/// per rank.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// Unanswered writes of values somebody reads: they can only go right before a reader
    /// (see `Search::try_linearize`), and trying them first finds such placements at once.
    ObservedUnanswered,
    Answered,
    /// Other unanswered operations, last: configurations without them are then explored (and
    /// remembered) first, and those failures rule out the same configurations with them.
    OtherUnanswered,
}

impl Rank {
    fn next(self) -> Option<Rank> {
        match self {
            Rank::ObservedUnanswered => Some(Rank::Answered),
            Rank::Answered => Some(Rank::OtherUnanswered),
            Rank::OtherUnanswered => None,
        }
    }
}

/// A choice the search can undo: the lifted call and the situation before it.
#[derive(Clone, Copy)]
struct Frame {
    call: usize,
    before: Situation,
}

/// The deepest point the search reached, kept to explain a violation.
struct DeadEnd {
    /// Operations linearized so far, in order.
    prefix: Vec<usize>,
    /// The operation whose return was reached before it could be linearized.
    blocked: Option<usize>,
    /// The other operations that were allowed to go next.
    candidates: Vec<usize>,
}

enum Outcome {
    Linearizable,
    Violation,
    GaveUp,
}

/// What happened when the search tried to linearize a candidate.
enum Attempt {
    Linearized,
    Rejected,
    OutOfBudget,
}

/// The search over one key's history.
struct Search<'a> {
    ops: &'a [Indexed<'a>],
    model: Model,
    /// See `twins`.
    waits_for: Vec<Option<usize>>,
    rank: Vec<Rank>,
    events: EventList,
    /// Position of each operation in `answered` or `unanswered` (whichever it belongs to), in
    /// call order.
    slot: Vec<usize>,
    answered: Bits,
    unanswered: Bits,
    now: Situation,
    stack: Vec<Frame>,
    failures: Failures,
    /// Answered operations not linearized yet; once none is left the rest can go at the end.
    known_remaining: usize,
    explored: u64,
    budget: u64,
    deepest: Option<DeadEnd>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [Indexed<'a>], budget: u64) -> Self {
        let model = Model::new(ops);
        let rank = ops
            .iter()
            .map(
                |entry| match (entry.is_known(), model.writes_compared_value(entry.op)) {
                    (true, _) => Rank::Answered,
                    (false, true) => Rank::ObservedUnanswered,
                    (false, false) => Rank::OtherUnanswered,
                },
            )
            .collect();
        let mut by_call: Vec<usize> = (0..ops.len()).collect();
        by_call.sort_by_key(|&op| (ops[op].op.call, op));
        let (mut known, mut unknown) = (0, 0);
        let mut slot = vec![0; ops.len()];
        for op in by_call {
            let counter = if ops[op].is_known() {
                &mut known
            } else {
                &mut unknown
            };
            slot[op] = *counter;
            *counter += 1;
        }
        Search {
            ops,
            waits_for: twins(ops, &model),
            model,
            rank,
            events: EventList::new(ops),
            slot,
            answered: Bits::new(known),
            unanswered: Bits::new(unknown),
            now: Situation {
                state: None,
                before_unanswered: None,
            },
            stack: Vec::new(),
            failures: Failures::new(),
            known_remaining: known,
            explored: 0,
            budget,
            deepest: None,
        }
    }

    /// Runs the search, entering at most `budget` configurations.
    fn run(&mut self) -> Outcome {
        let mut entry = self.events.first();
        let mut pass = Rank::ObservedUnanswered;
        loop {
            // Unanswered operations may all take effect at the very end (or never), where
            // nothing observes them, so only the answered ones have to be placed.
            if self.known_remaining == 0 {
                return Outcome::Linearizable;
            }
            if self.events.is_call(entry) {
                if self.rank[self.events.op(entry)] == pass {
                    match self.try_linearize(entry) {
                        Attempt::Linearized => {
                            entry = self.events.first();
                            pass = Rank::ObservedUnanswered;
                            continue;
                        }
                        Attempt::Rejected => {}
                        Attempt::OutOfBudget => return Outcome::GaveUp,
                    }
                }
                entry = self.events.next(entry);
            } else if let Some(next_pass) = pass.next() {
                // Reached the first return: scan the same candidates again for the next rank.
                entry = self.events.first();
                pass = next_pass;
            } else {
                // The operation returning here (or, defensively, the end of the list) should
                // already have taken effect, and no candidate left works: this branch is dead.
                self.record_dead_end(entry);
                let Some(frame) = self.backtrack() else {
                    return Outcome::Violation;
                };
                // Resume the scan just after the undone choice, in the pass that made it.
                entry = self.events.next(frame.call);
                pass = self.rank[self.events.op(frame.call)];
            }
        }
    }

    /// Linearizes the operation of `call` next, unless the model rejects it, it is pointless
    /// there, or the resulting configuration is known to fail.
    ///
    /// Unanswered operations are only placed where something needs them. Nothing waits for
    /// their return and nobody saw their result, so in any linearization an unanswered
    /// operation U that turns state s into s' can be moved later or dropped (it may take effect
    /// at the very end, where it is unobservable) unless the operation X right after it depends
    /// on it:
    /// * if U leaves the state unchanged, dropping it changes nothing;
    /// * if X is a put, X overwrites U's effect, so U can be dropped;
    /// * if X is answered and possible in s, it is a put or a failed swap (nothing else is
    ///   possible in both s and s'), and a failed swap changes nothing, so X can go first.
    ///
    /// Repeating these moves turns any linearization into one in which every unanswered
    /// operation changes the state and is followed by an operation that is not a put and, if
    /// answered, impossible in the state before U. Searching only for those loses nothing, and
    /// keeps the search from trying pending timed-out writes at every position.
    fn try_linearize(&mut self, call: usize) -> Attempt {
        let op = self.events.op(call);
        let entry = self.ops[op];
        if let Some(before) = self.now.before_unanswered {
            let needs_it = match entry.op.kind {
                OpKind::Put { .. } => false,
                _ => !entry.is_known() || self.model.step(before, entry.op).is_none(),
            };
            if !needs_it {
                return Attempt::Rejected;
            }
        }
        if let Some(twin) = self.waits_for[op]
            && !self.unanswered.contains(self.slot[twin])
        {
            return Attempt::Rejected;
        }
        let Some(state) = self.model.step(self.now.state, entry.op) else {
            return Attempt::Rejected;
        };
        if !entry.is_known() && state == self.now.state {
            return Attempt::Rejected;
        }
        let next = Situation {
            state,
            before_unanswered: (!entry.is_known()).then_some(self.now.state),
        };
        self.mark(op, true);
        if self.failures.covers(&self.answered, &self.unanswered, next) {
            self.mark(op, false);
            return Attempt::Rejected;
        }
        self.explored += 1;
        if self.explored > self.budget {
            return Attempt::OutOfBudget;
        }
        self.stack.push(Frame {
            call,
            before: self.now,
        });
        self.now = next;
        self.events.lift(call);
        if entry.is_known() {
            self.known_remaining -= 1;
        }
        Attempt::Linearized
    }

    /// Abandons the current configuration, which has just failed, and undoes the last choice.
    fn backtrack(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        self.failures
            .insert(&self.answered, &self.unanswered, self.now);
        let op = self.events.op(frame.call);
        self.mark(op, false);
        self.now = frame.before;
        self.events.unlift(frame.call);
        if self.ops[op].is_known() {
            self.known_remaining += 1;
        }
        Some(frame)
    }

    /// Adds `op` to, or removes it from, the set of linearized operations.
    fn mark(&mut self, op: usize, linearized: bool) {
        let bits = if self.ops[op].is_known() {
            &mut self.answered
        } else {
            &mut self.unanswered
        };
        if linearized {
            bits.set(self.slot[op]);
        } else {
            bits.clear(self.slot[op]);
        }
    }

    /// Remembers the current dead end if it is the deepest so far.
    fn record_dead_end(&mut self, blocked_at: usize) {
        let depth = self.stack.len();
        if self
            .deepest
            .as_ref()
            .is_some_and(|deepest| deepest.prefix.len() >= depth)
        {
            return;
        }
        let blocked = (blocked_at != NIL).then(|| self.events.op(blocked_at));
        let mut candidates = Vec::new();
        let mut node = self.events.first();
        while node != blocked_at && node != NIL {
            let op = self.events.op(node);
            if self.events.is_call(node) && Some(op) != blocked {
                candidates.push(op);
            }
            node = self.events.next(node);
        }
        self.deepest = Some(DeadEnd {
            prefix: self
                .stack
                .iter()
                .map(|frame| self.events.op(frame.call))
                .collect(),
            blocked,
            candidates,
        });
    }

    /// Describes a violation found by `run`.
    fn explain(&self, key: &str) -> String {
        let mut text = format!(
            "no linearization of the {} operations on key {key:?} exists ({} states explored)",
            self.ops.len(),
            self.explored
        );
        let Some(dead_end) = &self.deepest else {
            return text;
        };
        // The search works on abstract states; replaying the prefix gives the real value.
        let state = dead_end
            .prefix
            .iter()
            .try_fold(None, |state, &op| apply(state, self.ops[op].op))
            .unwrap_or(None);
        let shown = dead_end.prefix.len().min(PREFIX_SHOWN);
        let _ = write!(
            text,
            "\nlongest linearizable prefix: {} operations, leaving the key {}",
            dead_end.prefix.len(),
            show_state(state)
        );
        if shown < dead_end.prefix.len() {
            let _ = write!(text, "; its last {shown}:");
        } else if shown > 0 {
            text.push(':');
        }
        for &op in &dead_end.prefix[dead_end.prefix.len() - shown..] {
            let _ = write!(text, "\n  {}", describe(self.ops[op]));
        }
        if let Some(blocked) = dead_end.blocked {
            let _ = write!(
                text,
                "\nreturned before it could be placed after that prefix:\n  {} — {}",
                describe(self.ops[blocked]),
                self.why_not(blocked, state)
            );
        }
        let (answered, unanswered): (Vec<usize>, Vec<usize>) = dead_end
            .candidates
            .iter()
            .partition(|&&op| self.ops[op].is_known());
        if !answered.is_empty() {
            text.push_str("\nother operations that could have gone next:");
            for op in answered {
                let _ = write!(
                    text,
                    "\n  {} — {}",
                    describe(self.ops[op]),
                    self.why_not(op, state)
                );
            }
        }
        if !unanswered.is_empty() {
            let _ = write!(
                text,
                "\n{} unanswered operations could have taken effect there too, none usefully",
                unanswered.len()
            );
            if unanswered.len() > UNANSWERED_SHOWN {
                let _ = write!(text, "; the first {UNANSWERED_SHOWN}");
            }
            text.push(':');
            for &op in unanswered.iter().take(UNANSWERED_SHOWN) {
                let _ = write!(text, "\n  {}", describe(self.ops[op]));
            }
        }
        text
    }

    /// Why `op` did not fit after the deepest prefix, which left the key in `state`.
    fn why_not(&self, op: usize, state: State) -> String {
        match apply(state, self.ops[op].op) {
            None => format!("impossible while the key is {}", show_state(state)),
            Some(_) => "possible here, but no continuation worked".to_string(),
        }
    }
}

/// One operation in a message, e.g. `#12 client 3: cas(absent -> 7) = true [call 10 ns, return 25 ns]`.
fn describe(entry: Indexed) -> String {
    let op = entry.op;
    let kind = match &op.kind {
        OpKind::Get => "get".to_string(),
        OpKind::Put { value } => format!("put({value})"),
        OpKind::Cas { expected, new } => format!("cas({} -> {new})", show_state(*expected)),
    };
    let result = match &op.result {
        OpResult::Get(value) => show_state(*value),
        OpResult::Put => "ok".to_string(),
        OpResult::Cas(swapped) => swapped.to_string(),
        OpResult::Unknown => "unknown".to_string(),
    };
    let ret = match op.result {
        OpResult::Unknown => "no answer".to_string(),
        _ => format!("return {} ns", op.ret),
    };
    format!(
        "#{} client {}: {kind} = {result} [call {} ns, {ret}]",
        entry.index, op.client, op.call
    )
}

fn show_state(state: State) -> String {
    match state {
        None => "absent".to_string(),
        Some(value) => value.to_string(),
    }
}
