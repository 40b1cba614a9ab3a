//! The webhook pipeline's tests, as one test binary (each binary links the whole tree): every
//! delivery order of linked Stripe and Clerk events, and the ordering rules.

mod permutations;
mod rules;
