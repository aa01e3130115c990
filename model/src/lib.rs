//! An exhaustive model of the CreateOrder protocol (DESIGN.md §4-§8), checked with
//! [stateright](https://www.stateright.rs): every interleaving of two CreateOrder calls on
//! one cart, crashes at every step, a broker that checks back at any time and more than
//! once, END_TRANSACTION lost, messages delivered twice and in any order, a Sell that
//! arrives after its reback, a payment racing the pay timeout, CancelOrder, and (as a
//! second configuration) two calls with the same request_id.
//!
//! Each action names the function that implements it. The model is small on purpose (one
//! goods, one unit of stock, two calls on one cart), so the checker visits every state in
//! seconds; the properties are DESIGN.md's I1-I5 plus "an order the caller was told is OK
//! keeps its deduction unless the pay timeout closed it".
//!
//! The broker may give up on a pending half message at any time (after
//! `transactionCheckMax` check-backs, or none if order_srv was away all along): it is then
//! never delivered and never asked about again. The reconciler (`inventory_srv::reconcile`,
//! `order_srv::reconcile`) returns the stock of a deduction whose order was never placed
//! or is closed, at any time, racing the call it asks about.
//!
//! [`Bugs`] switches on mistakes the code must not make (the Go original's check-back, a
//! barrier that is not first, a reback that is not idempotent, a Sell that ignores the
//! tombstone, an unconditional timeout close, a pay timeout that does not claim the
//! barrier of an order it does not find); the tests show the checker finds each one.

use std::fmt;

use stateright::{Model, Property};

/// CreateOrder calls in the model, all on the same user's cart.
pub const CALLS: usize = 2;
/// Stock of the one goods at the start. Each order takes one.
pub const INITIAL_STOCK: i8 = 1;
/// How often the broker may deliver one message (at-least-once: up to twice).
const MAX_DELIVERIES: u8 = 2;

/// Mistakes the checker must catch. All `false` is the protocol as implemented.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bugs {
    /// The check-back answers "return the stock" when it finds no committed barrier,
    /// without claiming the barrier first (the Go original's bug).
    pub check_back_without_barrier: bool,
    /// The local transaction writes the order without inserting its barrier row first.
    pub local_tx_without_barrier: bool,
    /// A reback of a RETURNED detail returns the stock again.
    pub reback_not_idempotent: bool,
    /// Sell deducts even when a reback already tombstoned the order_sn.
    pub sell_ignores_tombstone: bool,
    /// The pay timeout closes the order whatever its status.
    pub unconditional_timeout_close: bool,
    /// A pay timeout that finds no order acknowledges it without claiming its barrier
    /// (the code before it did): an order committed after its pay timeout came never
    /// closes.
    pub timeout_without_barrier: bool,
    /// No reconciler: nothing returns the stock of an order the broker gave up on.
    pub no_reconciler: bool,
}

/// Where one CreateOrder call is (order_srv's side). The half message and the pay-timeout
/// travel beside the cart claim (see `half_in_flight`, `timeout_in_flight`): Sell waits
/// for the half message and the claim, COMMIT for the pay-timeout too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    /// Not started.
    Idle,
    /// The half message is sent; the cart claim runs beside it.
    Started,
    /// The claim failed (cart held or empty): Rollback as soon as the listener runs.
    Refused,
    /// The cart is claimed (the order's transaction holds its row locks).
    Claimed,
    /// Sell is sent; its answer is awaited.
    Selling,
    /// Sell answered OK; COMMIT waits for the order's writes and the pay-timeout.
    Sold,
    /// COMMIT succeeded.
    Committed,
    /// The call ended (its END_TRANSACTION is sent or lost; a crash ends it too).
    Ended,
}

/// The half message of one call, at the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Half {
    None,
    /// Stored, not resolved: the broker will check back.
    Pending,
    /// Resolved Commit: the reback is delivered to inventory.
    Committed,
    /// Resolved Rollback: never delivered.
    RolledBack,
    /// The broker gave up (`transactionCheckMax` check-backs): discarded into
    /// TRANS_CHECK_MAXTIME_TOPIC, never delivered, never checked back again.
    Discarded,
}

/// The local transaction's writes (`write_order`: the barrier row first, then the order
/// and its cart lines), which run from the claim on, beside the half message and Sell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Writes {
    Pending,
    /// Written, not committed.
    Done,
    /// The barrier row was already there (a check-back decided "aborted"): this order
    /// must not exist.
    Failed,
}

/// A row of `tx_barrier`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Barrier {
    None,
    /// Inserted by the local transaction, not committed yet: a check-back's insert waits.
    CommittedUncommitted,
    Committed,
    Aborted,
}

/// `order_info.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    None,
    WaitBuyerPay,
    Paid,
    Closed,
}

impl Order {
    /// Placed and not closed: the order keeps its deduction.
    fn is_live(self) -> bool {
        matches!(self, Order::WaitBuyerPay | Order::Paid)
    }
}

/// A row of `stock_sell_detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Detail {
    None,
    Deducted,
    /// Returned after a deduction, or a tombstone (`deducted == false`).
    Returned {
        deducted: bool,
    },
}

/// The answer to a Sell, travelling back to order_srv.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SellAnswer {
    None,
    Ok,
    Refused,
}

/// The whole system: order_srv, the broker, inventory and what each caller was told.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub call: [Call; CALLS],
    /// The half message is sent and not stored yet: the broker may still store it, even
    /// after its sender crashed.
    pub half_in_flight: [bool; CALLS],
    /// The pay-timeout message, sent with the half message, is not stored yet: likewise.
    pub timeout_in_flight: [bool; CALLS],
    pub half: [Half; CALLS],
    pub writes: [Writes; CALLS],
    pub barrier: [Barrier; CALLS],
    pub order: [Order; CALLS],
    /// Whether the cart's checked lines are still there (one cart, both calls).
    pub cart_lines: bool,
    /// Which call's open transaction holds the cart lines.
    pub cart_claim: Option<usize>,
    /// A Sell request on the wire (it may arrive after everything else).
    pub sell_in_flight: [bool; CALLS],
    pub sell_answer: [SellAnswer; CALLS],
    pub detail: [Detail; CALLS],
    pub stock: i8,
    /// Reback deliveries still to come, per order.
    pub rebacks: [u8; CALLS],
    /// The pay-timeout message is stored (before COMMIT, possibly before the claim).
    pub timeout_stored: [bool; CALLS],
    /// Pay-timeout deliveries still to come, per order.
    pub timeouts: [u8; CALLS],
    /// The pay timeout closed the order and its reback is still to be sent.
    pub reback_to_send: [bool; CALLS],
    /// Deliveries so far (the broker delivers each message at most twice here).
    pub reback_deliveries: [u8; CALLS],
    pub timeout_deliveries: [u8; CALLS],
    /// Stock units deducted and returned per order, ever (for I5).
    pub deducted: [u8; CALLS],
    pub returned: [u8; CALLS],
    /// Which order the caller was told it got (its own, or with a request_id the order of
    /// an earlier attempt).
    pub told: [Option<usize>; CALLS],
    /// CancelOrder calls so far (at most two: a cancel and its retry).
    pub cancels: [u8; CALLS],
    /// Whether the order was ever paid.
    pub paid: [bool; CALLS],
}

/// One step some part of the system may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `OrderPlacer::place`: look up an earlier attempt, or send the half message and the
    /// pay-timeout (2-3).
    Start(usize),
    /// The broker stores the half message; the listener runs (`send_half_message`).
    StoreHalf(usize),
    /// `OrderPlacer::claim` (4.1-4.2), beside the half message: claim the cart lines, or
    /// fail (answered Rollback once the listener runs).
    ClaimCart(usize),
    /// `OrderPlacer::sell` (4.3): send Sell.
    SendSell(usize),
    /// inventory `stock::sell`: the Sell request arrives (any time, even late).
    SellArrives(usize),
    /// `OrderPlacer::decide` reads Sell's answer: OK, or a definitive refusal (Rollback).
    SellAnswered(usize),
    /// Sell's deadline passes: the outcome is unknown, so Commit the reback.
    SellTimesOut(usize),
    /// `write_order_rows` (4.4), from the claim on, beside the half message and Sell: insert
    /// the barrier row 'committed' first (the order's rows follow; nothing is committed).
    InsertBarrier(usize),
    /// `OrderPlacer::send_pay_timeout`, sent first, beside the claim, Sell
    /// and the order's writes: the delayed pay-timeout message is stored.
    SendPayTimeout(usize),
    /// `OrderPlacer::commit`: COMMIT once Sell answered OK, the writes are done and the
    /// pay-timeout is stored (4.4-4.5).
    Commit(usize),
    /// The listener's answer Rollback reaches the broker (END_TRANSACTION).
    EndTransaction(usize),
    /// END_TRANSACTION is lost (one-way): the half message stays pending.
    EndTransactionLost(usize),
    /// order_srv dies: the open transaction rolls back, nothing is answered.
    Crash(usize),
    /// `check_back::answer` (§5): the broker asks whether the order committed.
    CheckBack(usize),
    /// The broker stops checking back a pending half message and discards it.
    BrokerGivesUp(usize),
    /// `Reconciler::round` asks `OrderOutcomes` about a deduction, answered from the order
    /// row, else by claiming the barrier; never placed or closed: `stock::reback`.
    Reconcile(usize),
    /// inventory's reback consumer (`RebackHandler::handle`, `stock::reback`) gets the
    /// reback; `true`: the broker will deliver it again (at least once).
    DeliverReback(usize, bool),
    /// `OrderCloser::handle` (`close_on_timeout`): the pay timeout arrives; conditional
    /// close (§7); `true`: it will be delivered again.
    DeliverTimeout(usize, bool),
    /// `send_reback` after the close (a failed send is a redelivery of the timeout).
    SendTimeoutReback(usize),
    /// `orders::update_status`: the buyer pays (conditional, WAIT_BUYER_PAY only).
    Pay(usize),
    /// `OrderCloser::cancel`: the buyer cancels (the pay timeout's conditional close).
    Cancel(usize),
}

/// The protocol with the given mistakes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Protocol {
    pub bugs: Bugs,
    /// Both calls carry the same request_id (AIP-155): the second is a retry or a
    /// duplicate of the first (`OrderPlacer::placed_before`, `earlier_attempt`, the unique
    /// key on `order_info(user_id, request_id)`).
    pub same_request_id: bool,
}

impl Protocol {
    fn quiet(&self, state: &State) -> bool {
        (0..CALLS).all(|i| {
            (self.bugs.no_reconciler || !Self::reconcilable(state, i))
                && matches!(state.call[i], Call::Idle | Call::Ended)
                && !state.half_in_flight[i]
                && !state.timeout_in_flight[i]
                && state.half[i] != Half::Pending
                && !state.sell_in_flight[i]
                && state.rebacks[i] == 0
                && state.timeouts[i] == 0
                && !state.reback_to_send[i]
        })
    }

    /// What the reconciler would act on: stock deducted for an order that does not exist
    /// (yet, or ever) or is closed.
    fn reconcilable(state: &State, i: usize) -> bool {
        state.detail[i] == Detail::Deducted && !state.order[i].is_live()
    }

    /// `stock::reback`: the effect of a reback on inventory (the consumer and the
    /// reconciler alike).
    fn reback(state: &mut State, i: usize, bugs: Bugs) {
        match state.detail[i] {
            Detail::Deducted => {
                state.stock += 1;
                state.returned[i] = state.returned[i].saturating_add(1);
                state.detail[i] = Detail::Returned { deducted: true };
            }
            Detail::Returned { deducted: true } if bugs.reback_not_idempotent => {
                state.stock += 1;
                state.returned[i] = state.returned[i].saturating_add(1);
            }
            Detail::Returned { .. } => {}
            Detail::None => state.detail[i] = Detail::Returned { deducted: false },
        }
    }

    /// With a shared request_id: the order an attempt already placed, if any.
    fn placed_before(&self, state: &State) -> Option<usize> {
        if !self.same_request_id {
            return None;
        }
        (0..CALLS).find(|j| state.order[*j] != Order::None)
    }

    fn deducted_in_details(state: &State) -> i8 {
        let deducted = state
            .detail
            .iter()
            .filter(|d| **d == Detail::Deducted)
            .count();
        i8::try_from(deducted).unwrap_or(i8::MAX)
    }

    /// The open transaction of call `i` ends without COMMIT (rollback or crash).
    fn abandon_transaction(state: &mut State, i: usize) {
        if state.cart_claim == Some(i) {
            state.cart_claim = None;
        }
        if state.barrier[i] == Barrier::CommittedUncommitted {
            state.barrier[i] = Barrier::None;
        }
    }

    /// The listener answers: its transaction ends and the call is over.
    fn answer(state: &mut State, i: usize, half: Half) {
        Self::abandon_transaction(state, i);
        Self::resolve(state, i, half);
        state.call[i] = Call::Ended;
    }

    fn resolve(state: &mut State, i: usize, half: Half) {
        if state.half[i] == Half::Pending {
            state.half[i] = half;
            if half == Half::Committed {
                state.rebacks[i] = state.rebacks[i].saturating_add(1);
            }
        }
    }

    /// Claims the barrier of call `i` as the check-back does (`INSERT IGNORE` 'aborted'):
    /// the row that stands, or `None` while the insert waits on an uncommitted row.
    fn claim_barrier(state: &mut State, i: usize) -> Option<Barrier> {
        match state.barrier[i] {
            Barrier::CommittedUncommitted => return None,
            Barrier::None => state.barrier[i] = Barrier::Aborted,
            Barrier::Committed | Barrier::Aborted => {}
        }
        Some(state.barrier[i])
    }

    /// The conditional close (§7) of the pay timeout and CancelOrder: an unpaid order
    /// closes, and a closed order's reback is to be sent.
    fn close(state: &mut State, i: usize, bugs: Bugs) {
        let closable = state.order[i] == Order::WaitBuyerPay
            || (bugs.unconditional_timeout_close && state.order[i] != Order::None);
        if closable {
            state.order[i] = Order::Closed;
        }
        if state.order[i] == Order::Closed {
            state.reback_to_send[i] = true;
        }
    }

    /// The steps of call `i` itself, of what it sends beside the cart claim (the half
    /// message, the pay-timeout, the order's writes), and its crash.
    fn call_steps(s: &State, i: usize, actions: &mut Vec<Action>) {
        if s.half_in_flight[i] {
            actions.push(Action::StoreHalf(i));
        }
        // The pay-timeout message, sent with the half message, is stored any time
        // before COMMIT (which waits for it), or after a refusal or a crash.
        if s.timeout_in_flight[i] {
            actions.push(Action::SendPayTimeout(i));
        }
        // So are the order's writes (uncommitted until COMMIT).
        if s.writes[i] == Writes::Pending
            && matches!(s.call[i], Call::Claimed | Call::Selling | Call::Sold)
        {
            actions.push(Action::InsertBarrier(i));
        }
        match s.call[i] {
            Call::Idle => actions.push(Action::Start(i)),
            Call::Started => actions.push(Action::ClaimCart(i)),
            Call::Refused => {}
            // Sell only once the half message is stored.
            Call::Claimed if s.half[i] != Half::None => actions.push(Action::SendSell(i)),
            Call::Claimed => {}
            Call::Selling => {
                if s.sell_answer[i] != SellAnswer::None {
                    actions.push(Action::SellAnswered(i));
                }
                actions.push(Action::SellTimesOut(i));
            }
            Call::Sold if s.writes[i] == Writes::Done && s.timeout_stored[i] => {
                actions.push(Action::Commit(i));
            }
            Call::Sold => {}
            Call::Committed => {
                actions.push(Action::EndTransaction(i));
                actions.push(Action::EndTransactionLost(i));
            }
            Call::Ended => {}
        }
        if !matches!(s.call[i], Call::Idle | Call::Ended) {
            actions.push(Action::Crash(i));
        }
    }

    /// What the broker, inventory, the reconciler and the pay timeout may do about call
    /// `i`'s messages and deduction, at any time.
    fn system_steps(&self, s: &State, i: usize, actions: &mut Vec<Action>) {
        // The broker checks back a pending half message at any time; one resolved as
        // Commit may be checked again (its resolution record was still buffered when
        // the broker restarted), which delivers the reback once more.
        if s.half[i] == Half::Pending
            || (s.half[i] == Half::Committed
                && s.rebacks[i] == 0
                && s.reback_deliveries[i] < MAX_DELIVERIES)
        {
            actions.push(Action::CheckBack(i));
        }
        if s.half[i] == Half::Pending {
            actions.push(Action::BrokerGivesUp(i));
        }
        if !self.bugs.no_reconciler && Self::reconcilable(s, i) {
            actions.push(Action::Reconcile(i));
        }
        if s.sell_in_flight[i] {
            actions.push(Action::SellArrives(i));
        }
        Self::deliveries(actions, s.rebacks[i], s.reback_deliveries[i], |again| {
            Action::DeliverReback(i, again)
        });
        Self::deliveries(actions, s.timeouts[i], s.timeout_deliveries[i], |again| {
            Action::DeliverTimeout(i, again)
        });
        if s.reback_to_send[i] {
            actions.push(Action::SendTimeoutReback(i));
        }
    }

    /// A message with deliveries still to come is delivered: `deliver(false)`, or, while
    /// it has been delivered less than [`MAX_DELIVERIES`] times, `deliver(true)` (it will
    /// come again).
    fn deliveries(
        actions: &mut Vec<Action>,
        to_come: u8,
        delivered: u8,
        deliver: impl Fn(bool) -> Action,
    ) {
        if to_come > 0 {
            actions.push(deliver(false));
            if delivered + 1 < MAX_DELIVERIES {
                actions.push(deliver(true));
            }
        }
    }

    /// What the buyer may do with order `i`.
    fn buyer_steps(s: &State, i: usize, actions: &mut Vec<Action>) {
        if s.order[i] == Order::WaitBuyerPay {
            actions.push(Action::Pay(i));
        }
        if s.order[i] != Order::None && s.cancels[i] < 2 {
            actions.push(Action::Cancel(i));
        }
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            call: [Call::Idle; CALLS],
            half_in_flight: [false; CALLS],
            timeout_in_flight: [false; CALLS],
            half: [Half::None; CALLS],
            writes: [Writes::Pending; CALLS],
            barrier: [Barrier::None; CALLS],
            order: [Order::None; CALLS],
            cart_lines: true,
            cart_claim: None,
            sell_in_flight: [false; CALLS],
            sell_answer: [SellAnswer::None; CALLS],
            detail: [Detail::None; CALLS],
            stock: INITIAL_STOCK,
            rebacks: [0; CALLS],
            timeout_stored: [false; CALLS],
            timeouts: [0; CALLS],
            reback_to_send: [false; CALLS],
            reback_deliveries: [0; CALLS],
            timeout_deliveries: [0; CALLS],
            deducted: [0; CALLS],
            returned: [0; CALLS],
            told: [None; CALLS],
            cancels: [0; CALLS],
            paid: [false; CALLS],
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        for i in 0..CALLS {
            Self::call_steps(s, i, actions);
            self.system_steps(s, i, actions);
            Self::buyer_steps(s, i, actions);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        let bugs = self.bugs;
        match action {
            Action::Start(i) => {
                if let Some(j) = self.placed_before(&s) {
                    // A retry of a placed order: its order, no half message.
                    s.told[i] = Some(j);
                    s.call[i] = Call::Ended;
                } else {
                    s.half_in_flight[i] = true;
                    s.timeout_in_flight[i] = true;
                    s.call[i] = Call::Started;
                }
            }
            Action::StoreHalf(i) => {
                s.half_in_flight[i] = false;
                s.half[i] = Half::Pending;
                if s.call[i] == Call::Refused {
                    // The listener runs and gets the claim's answer.
                    Self::answer(&mut s, i, Half::RolledBack);
                }
            }
            Action::ClaimCart(i) => {
                if s.cart_claim.is_some() || !s.cart_lines {
                    // Unless an earlier attempt with the same request_id placed the order.
                    s.told[i] = self.placed_before(&s);
                    // ABORTED (another call holds the cart) or FAILED_PRECONDITION (empty):
                    // Rollback, as soon as the listener runs.
                    if s.half[i] == Half::None {
                        Self::abandon_transaction(&mut s, i);
                        s.call[i] = Call::Refused;
                    } else {
                        Self::answer(&mut s, i, Half::RolledBack);
                    }
                } else {
                    s.cart_claim = Some(i);
                    s.call[i] = Call::Claimed;
                }
            }
            Action::SendSell(i) => {
                s.sell_in_flight[i] = true;
                s.call[i] = Call::Selling;
            }
            Action::SellArrives(i) => {
                s.sell_in_flight[i] = false;
                s.sell_answer[i] = match s.detail[i] {
                    Detail::Deducted => SellAnswer::Ok,
                    Detail::Returned { .. } if !bugs.sell_ignores_tombstone => SellAnswer::Refused,
                    _ if s.stock >= 1 => {
                        s.stock -= 1;
                        s.detail[i] = Detail::Deducted;
                        s.deducted[i] = s.deducted[i].saturating_add(1);
                        SellAnswer::Ok
                    }
                    _ => SellAnswer::Refused,
                };
            }
            Action::SellAnswered(i) => match s.sell_answer[i] {
                // The writes failed meanwhile: stock may be deducted, Commit the reback.
                SellAnswer::Ok if s.writes[i] == Writes::Failed => {
                    Self::answer(&mut s, i, Half::Committed);
                }
                SellAnswer::Ok => s.call[i] = Call::Sold,
                SellAnswer::Refused => Self::answer(&mut s, i, Half::RolledBack),
                SellAnswer::None => return None,
            },
            Action::SellTimesOut(i) => Self::answer(&mut s, i, Half::Committed),
            Action::InsertBarrier(i) => {
                if bugs.local_tx_without_barrier {
                    s.writes[i] = Writes::Done;
                } else if s.barrier[i] == Barrier::None {
                    s.barrier[i] = Barrier::CommittedUncommitted;
                    s.writes[i] = Writes::Done;
                } else if s.call[i] == Call::Sold {
                    // Duplicate key: a check-back already decided "aborted".
                    Self::answer(&mut s, i, Half::Committed);
                } else {
                    // The same, with Sell still to answer: decided once it has.
                    s.writes[i] = Writes::Failed;
                }
            }
            Action::Commit(i) => {
                if self.placed_before(&s).is_some() {
                    // The unique (user_id, request_id) key: this order is not written.
                    Self::answer(&mut s, i, Half::Committed);
                    return Some(s);
                }
                if s.barrier[i] == Barrier::CommittedUncommitted {
                    s.barrier[i] = Barrier::Committed;
                }
                s.order[i] = Order::WaitBuyerPay;
                s.cart_lines = false;
                s.cart_claim = None;
                s.call[i] = Call::Committed;
                // The caller is answered OK as the listener returns; END_TRANSACTION follows.
                s.told[i] = Some(i);
            }
            Action::SendPayTimeout(i) => {
                // A pay timeout delivered before COMMIT, or for a call that never commits,
                // finds no order and claims its barrier (see `DeliverTimeout`).
                s.timeout_in_flight[i] = false;
                s.timeout_stored[i] = true;
                s.timeouts[i] = 1;
            }
            Action::EndTransaction(i) => {
                Self::resolve(&mut s, i, Half::RolledBack);
                s.call[i] = Call::Ended;
            }
            Action::EndTransactionLost(i) => s.call[i] = Call::Ended,
            Action::Crash(i) => {
                Self::abandon_transaction(&mut s, i);
                s.call[i] = Call::Ended;
            }
            Action::CheckBack(i) => {
                if bugs.check_back_without_barrier {
                    // Reads the barrier (or the order) and answers without claiming it.
                    match s.barrier[i] {
                        Barrier::Committed => Self::resolve(&mut s, i, Half::RolledBack),
                        Barrier::CommittedUncommitted => return None,
                        Barrier::None | Barrier::Aborted => {
                            Self::resolve(&mut s, i, Half::Committed);
                        }
                    }
                } else {
                    let answer = match Self::claim_barrier(&mut s, i)? {
                        Barrier::Committed => Half::RolledBack,
                        _ => Half::Committed,
                    };
                    Self::resolve(&mut s, i, answer);
                }
                if s.half[i] == Half::Committed && last.half[i] == Half::Committed {
                    // A repeated check-back of a committed half message: delivered again.
                    s.rebacks[i] = s.rebacks[i].saturating_add(1);
                }
            }
            Action::DeliverReback(i, again) => {
                if !again {
                    s.rebacks[i] -= 1;
                }
                s.reback_deliveries[i] = s.reback_deliveries[i].saturating_add(1);
                Self::reback(&mut s, i, bugs);
            }
            Action::BrokerGivesUp(i) => s.half[i] = Half::Discarded,
            Action::Reconcile(i) => {
                // `ReconcileService::fate`: no order row, so claim the barrier as the
                // check-back does (an uncommitted 'committed' row is waited for).
                if s.order[i] == Order::None
                    && Self::claim_barrier(&mut s, i)? == Barrier::Committed
                {
                    // COMMIT writes the barrier and the order together.
                    return None;
                }
                Self::reback(&mut s, i, bugs);
            }
            Action::DeliverTimeout(i, again) => {
                if !again {
                    s.timeouts[i] -= 1;
                }
                if s.order[i] == Order::None && !bugs.timeout_without_barrier {
                    // `committed_meanwhile`: claim the barrier as the check-back does; an
                    // uncommitted 'committed' row is waited for.
                    Self::claim_barrier(&mut s, i)?;
                }
                s.timeout_deliveries[i] = s.timeout_deliveries[i].saturating_add(1);
                Self::close(&mut s, i, bugs);
            }
            Action::SendTimeoutReback(i) => {
                s.reback_to_send[i] = false;
                s.rebacks[i] = s.rebacks[i].saturating_add(1);
            }
            Action::Pay(i) => {
                s.order[i] = Order::Paid;
                s.paid[i] = true;
            }
            Action::Cancel(i) => {
                s.cancels[i] += 1;
                Self::close(&mut s, i, bugs);
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = Self::invariants();
        properties.extend(Self::promises());
        properties
    }
}

impl Protocol {
    /// DESIGN.md's I1-I5, and the reconciler's half of I2.
    fn invariants() -> Vec<Property<Self>> {
        vec![
            // I1 in every state: stock moves only together with a DEDUCTED detail.
            Property::always("I1 conservation", |_: &Protocol, s: &State| {
                i16::from(INITIAL_STOCK)
                    == i16::from(s.stock) + i16::from(Protocol::deducted_in_details(s))
            }),
            // I2 when quiet: DEDUCTED <=> the order exists and is not closed.
            Property::always("I2 agreement (quiet)", |p: &Protocol, s: &State| {
                !p.quiet(s)
                    || (0..CALLS).all(|i| (s.detail[i] == Detail::Deducted) == s.order[i].is_live())
            }),
            // When quiet, no stock is held for an order that does not exist or is closed,
            // even when the broker gave up on its half message (half of I2, named for the
            // reconciler).
            Property::always(
                "every deduction without a live order comes back (quiet)",
                |p: &Protocol, s: &State| {
                    !p.quiet(s)
                        || (0..CALLS)
                            .all(|i| s.detail[i] != Detail::Deducted || s.order[i].is_live())
                },
            ),
            // I3 in every state.
            Property::always("I3 no oversell", |_: &Protocol, s: &State| s.stock >= 0),
            // I4 when quiet: an order told OK exists with its deduction, or was closed by
            // its pay timeout and has its stock back.
            Property::always("I4 durability (quiet)", |p: &Protocol, s: &State| {
                !p.quiet(s)
                    || s.told.iter().flatten().all(|j| match s.order[*j] {
                        Order::WaitBuyerPay | Order::Paid => s.detail[*j] == Detail::Deducted,
                        Order::Closed => s.detail[*j] != Detail::Deducted,
                        Order::None => false,
                    })
            }),
            // I5 in every state: no order's stock deducted or returned twice.
            Property::always("I5 exactly-once effect", |_: &Protocol, s: &State| {
                (0..CALLS).all(|i| s.deducted[i] <= 1 && s.returned[i] <= s.deducted[i])
            }),
        ]
    }

    /// What a caller and the buyer are promised, and the examples that show the model
    /// reaches what the properties speak of.
    fn promises() -> Vec<Property<Self>> {
        vec![
            // An order told OK keeps its deduction unless the pay timeout closed it, and a
            // paid order is never closed.
            Property::always("told OK keeps its deduction", |_: &Protocol, s: &State| {
                s.told.iter().flatten().all(|j| {
                    s.order[*j] != Order::None
                        && (s.order[*j] == Order::Closed
                            || !matches!(s.detail[*j], Detail::Returned { .. }))
                })
            }),
            // When quiet every pay timeout has come: an unpaid order is closed by it.
            Property::always(
                "every unpaid order closes (quiet)",
                |p: &Protocol, s: &State| !p.quiet(s) || !s.order.contains(&Order::WaitBuyerPay),
            ),
            Property::always("a paid order is never closed", |_: &Protocol, s: &State| {
                (0..CALLS).all(|i| !(s.paid[i] && s.order[i] == Order::Closed))
            }),
            // One cart, one order.
            Property::always(
                "one cart becomes at most one order",
                |_: &Protocol, s: &State| {
                    s.order.iter().filter(|o| **o != Order::None).count() <= 1
                },
            ),
            // Sanity: the model does reach an order that was placed, paid, and one that
            // was closed with its stock back (so the properties are not vacuous).
            Property::sometimes("an order is paid", |_: &Protocol, s: &State| {
                s.paid.iter().any(|p| *p)
            }),
            Property::sometimes(
                "the broker gives up and the stock still comes back",
                |_: &Protocol, s: &State| {
                    (0..CALLS).any(|i| {
                        s.half[i] == Half::Discarded
                            && s.detail[i] == Detail::Returned { deducted: true }
                    }) && s.stock == INITIAL_STOCK
                },
            ),
            Property::sometimes(
                "an order is closed by its timeout",
                |_: &Protocol, s: &State| {
                    s.order.contains(&Order::Closed) && s.stock == INITIAL_STOCK
                },
            ),
        ]
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, i) = match *self {
            Action::Start(i) => ("sends its half message", i),
            Action::StoreHalf(i) => ("half message stored, listener runs", i),
            Action::ClaimCart(i) => ("claims the cart (or fails: Rollback)", i),
            Action::SendSell(i) => ("sends Sell", i),
            Action::SellArrives(i) => ("Sell arrives at inventory", i),
            Action::SellAnswered(i) => ("reads Sell's answer", i),
            Action::SellTimesOut(i) => ("Sell times out: Commit the reback", i),
            Action::InsertBarrier(i) => ("local tx inserts barrier 'committed'", i),
            Action::SendPayTimeout(i) => ("pay-timeout message stored", i),
            Action::Commit(i) => ("local tx COMMITs; caller told OK", i),
            Action::EndTransaction(i) => ("END_TRANSACTION Rollback reaches the broker", i),
            Action::EndTransactionLost(i) => ("END_TRANSACTION is lost", i),
            Action::Crash(i) => ("order_srv crashes", i),
            Action::CheckBack(i) => ("broker checks back", i),
            Action::BrokerGivesUp(i) => ("broker gives up on the half message", i),
            Action::Reconcile(i) => ("reconciler asks order_srv, returns the stock", i),
            Action::DeliverReback(i, false) => ("reback delivered to inventory", i),
            Action::DeliverReback(i, true) => ("reback delivered (it will come again)", i),
            Action::DeliverTimeout(i, false) => ("pay timeout delivered", i),
            Action::DeliverTimeout(i, true) => ("pay timeout delivered (it will come again)", i),
            Action::SendTimeoutReback(i) => ("pay timeout sends the reback", i),
            Action::Pay(i) => ("buyer pays", i),
            Action::Cancel(i) => ("buyer cancels", i),
        };
        write!(f, "call {i}: {what}")
    }
}

/// A counterexample as numbered lines, one action each.
pub fn trace(actions: &[Action]) -> String {
    actions
        .iter()
        .enumerate()
        .map(|(n, a)| format!("{:>2}. {a}\n", n + 1))
        .collect()
}
