//! The development tools: the whole system in one process ([`stack`]), the parts as child
//! processes ([`procs`]), and the live [`demo`], [`chaos`], [`bench`] (with its [`history`]) and [`soak`] runs
//! built on them. The embedded broker and the audit live in the `testkit` crate.

pub mod bench;
mod calls;
pub mod chaos;
pub mod demo;
mod driver;
pub mod history;
pub mod partition;
pub mod procs;
pub mod soak;
pub mod stack;
pub mod steps;
