#![allow(unsafe_code)]
//! The step function's speed: a flat transition with one guard and one assign (the
//! issue's 300,000 steps/s aim), a nested/parallel step, and machine loading.
//! Allocations per step are counted with a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_core::{Env, Event, Machine, start, step};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FLAT: &str = r#"
machine: flat
context: { n: 0 }
initial: a
states:
  a: { on: { go: { target: b, guard: "context.n >= 0", assign: { n: "context.n + 1" } } } }
  b: { on: { go: { target: a, guard: "context.n >= 0", assign: { n: "context.n + 1" } } } }
"#;

const NESTED: &str = r#"
machine: nested
context: { n: 0 }
initial: p
states:
  p:
    type: parallel
    states:
      r1: { initial: a, states: { a: { on: { go: b } }, b: { on: { go: a } } } }
      r2:
        initial: x
        states:
          x: { initial: x1, states: { x1: { on: { go: { target: x2, assign: { n: "context.n + 1" } } } }, x2: { on: { go: x1 } } } }
"#;

fn bench(c: &mut Criterion) {
    let env = Env::at(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap());
    for (name, src) in [("flat_guard_assign", FLAT), ("parallel_nested", NESTED)] {
        let m = Machine::load(src, None, Some("bench.yaml")).unwrap();
        let first = start(&m, &json!({}), &env).unwrap().snapshot;
        let ev = Event::new("go");
        // Allocations per step, measured once outside criterion.
        let mut snap = first.clone();
        let before = ALLOCS.load(Ordering::Relaxed);
        let n = 10_000;
        for _ in 0..n {
            snap = step(&m, &snap, &ev, &env).unwrap().snapshot;
        }
        let per = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / n as f64;
        eprintln!("{name}: {per:.1} allocations per step");
        let mut g = c.benchmark_group("step");
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            let mut snap = first.clone();
            b.iter(|| {
                snap = step(&m, &snap, &ev, &env).unwrap().snapshot;
            })
        });
        g.finish();
    }
    c.bench_function("load/coding-agent", |b| {
        let text = include_str!("../../../examples/coding-agent.yaml");
        b.iter(|| Machine::load(text, None, Some("coding-agent.yaml")).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
