//! A fault layer over any chain: what the network does to requests and answers.

use std::collections::VecDeque;

use crate::{ChainEntry, ChainError, CommitChain, Submission, SubmitAnswer};

/// One fault, applied to the next request it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The request never reaches the server.
    DropRequest,
    /// The server handles the request; the answer is lost.
    DropAnswer,
    /// The request reaches the server twice.
    Duplicate,
}

/// Wraps a chain and injects faults: a scripted queue for submissions, a count
/// of requests to fail, and a partition switch.
#[derive(Debug)]
pub struct FaultyChain<C> {
    inner: C,
    submit_faults: VecDeque<Fault>,
    fail_next: u32,
    partitioned: bool,
    /// Requests that did reach the inner chain.
    pub delivered: u64,
}

impl<C: CommitChain> FaultyChain<C> {
    /// No faults yet.
    pub const fn new(inner: C) -> Self {
        Self {
            inner,
            submit_faults: VecDeque::new(),
            fail_next: 0,
            partitioned: false,
            delivered: 0,
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
        if self.blocked() {
            return Err(ChainError::Unavailable);
        }
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
        }
    }

    fn fetch(&mut self, from_epoch: u64) -> Result<Vec<ChainEntry>, ChainError> {
        if self.blocked() {
            return Err(ChainError::Unavailable);
        }
        self.inner.fetch(from_epoch)
    }

    fn head(&mut self) -> Result<u64, ChainError> {
        if self.blocked() {
            return Err(ChainError::Unavailable);
        }
        self.inner.head()
    }
}
