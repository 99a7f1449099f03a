//! A fault layer over any chain: what the network does to requests and answers.

use std::collections::VecDeque;

use core::time::Duration;

use super::SimClock;
use crate::{ChainEntry, ChainError, Clock, CommitChain, Epoch, Submission, SubmitAnswer, Timestamp, WelcomeBlobs};

/// One fault, applied to the next request it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The request never reaches the server.
    DropRequest,
    /// The server handles the request; the answer is lost.
    DropAnswer,
    /// The request reaches the server twice.
    Duplicate,
    /// The request is held in the network and reaches the server once the
    /// simulated clock has moved this far; the sender gets no answer.
    Delay(Duration),
    /// The request is held until the next submission has reached the server,
    /// then delivered after it; the sender gets no answer.
    Reorder,
}

/// Wraps a chain and injects faults: a scripted queue for submissions, a count
/// of requests to fail, and a partition switch.
#[derive(Debug)]
pub struct FaultyChain<C> {
    inner: C,
    clock: SimClock,
    submit_faults: VecDeque<Fault>,
    /// Submissions in the network: delivered when due, or after the next one.
    delayed: Vec<(Timestamp, Submission)>,
    reordered: Vec<Submission>,
    fail_next: u32,
    partitioned: bool,
    /// Requests that did reach the inner chain.
    pub delivered: u64,
}

impl<C: CommitChain> FaultyChain<C> {
    /// No faults yet; delays are measured on `clock`.
    pub const fn new(inner: C, clock: SimClock) -> Self {
        Self {
            inner,
            clock,
            submit_faults: VecDeque::new(),
            delayed: Vec::new(),
            reordered: Vec::new(),
            fail_next: 0,
            partitioned: false,
            delivered: 0,
        }
    }

    /// Delivers held submissions whose delay has passed (their answers are lost).
    fn release_due(&mut self) {
        let now = self.clock.now();
        let (due, held): (Vec<_>, Vec<_>) = self.delayed.drain(..).partition(|(at, _)| *at <= now);
        self.delayed = held;
        for (_, s) in due {
            self.delivered += 1;
            let _ = self.inner.submit(&s);
        }
    }

    /// Applies `fault` to the next submission.
    pub fn on_next_submit(&mut self, fault: Fault) {
        self.submit_faults.push_back(fault);
    }

    /// The next `n` requests of any kind fail without reaching the server.
    pub const fn fail_next(&mut self, n: u32) {
        self.fail_next = n;
    }

    /// Cuts this device off (every request fails) or reconnects it.
    pub const fn partition(&mut self, cut: bool) {
        self.partitioned = cut;
    }

    /// The chain behind the faults.
    pub const fn inner_mut(&mut self) -> &mut C {
        &mut self.inner
    }

    fn blocked(&mut self) -> bool {
        if self.partitioned {
            return true;
        }
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return true;
        }
        false
    }
}

impl<C: CommitChain> CommitChain for FaultyChain<C> {
    fn submit(&mut self, s: &Submission) -> Result<SubmitAnswer, ChainError> {
        self.release_due();
        if self.blocked() {
            return Err(ChainError::Unavailable);
        }
        let overtaken = core::mem::take(&mut self.reordered);
        let answer = self.submit_now(s);
        // Submissions held for reordering arrive after this one.
        for held in overtaken {
            self.delivered += 1;
            let _ = self.inner.submit(&held);
        }
        answer
    }

    fn fetch(&mut self, from_epoch: Epoch) -> Result<Vec<ChainEntry>, ChainError> {
        self.release_due();
        if self.blocked() {
            return Err(ChainError::Unavailable);
        }
        self.inner.fetch(from_epoch)
    }

    fn head(&mut self) -> Result<Epoch, ChainError> {
        self.release_due();
        if self.blocked() {
            return Err(ChainError::Unavailable);
        }
        self.inner.head()
    }

    fn welcome(&mut self, epoch: Epoch) -> Result<Option<WelcomeBlobs>, ChainError> {
        self.release_due();
        if self.blocked() {
            return Err(ChainError::Unavailable);
        }
        self.inner.welcome(epoch)
    }

    fn post_fingerprint(&mut self, fingerprint: &[u8]) -> Result<(), ChainError> {
        self.release_due();
        if self.blocked() {
            return Err(ChainError::Unavailable);
        }
        self.inner.post_fingerprint(fingerprint)
    }

    fn fingerprints(&mut self) -> Result<Vec<Vec<u8>>, ChainError> {
        self.release_due();
        if self.blocked() {
            return Err(ChainError::Unavailable);
        }
        self.inner.fingerprints()
    }
}

impl<C: CommitChain> FaultyChain<C> {
    fn submit_now(&mut self, s: &Submission) -> Result<SubmitAnswer, ChainError> {
        match self.submit_faults.pop_front() {
            Some(Fault::DropRequest) => Err(ChainError::Unavailable),
            Some(Fault::DropAnswer) => {
                self.delivered += 1;
                self.inner.submit(s)?;
                Err(ChainError::Unavailable)
            }
            Some(Fault::Duplicate) => {
                self.delivered += 2;
                self.inner.submit(s)?;
                self.inner.submit(s)
            }
            None => {
                self.delivered += 1;
                self.inner.submit(s)
            }
            Some(Fault::Delay(d)) => {
                self.delayed.push((self.clock.now().after(d), s.clone()));
                Err(ChainError::Unavailable)
            }
            Some(Fault::Reorder) => {
                self.reordered.push(s.clone());
                Err(ChainError::Unavailable)
            }
        }
    }
}
