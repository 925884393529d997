//! The trainer calls strategy hooks in a fixed order, and replay fills its share of each batch.

mod common;

use common::*;
use cpt_continual::strategies::Replay;
use cpt_continual::{Context, ItemOf, RunOutcome, SilentObserver, Strategy};
use cpt_core::TokenSequence;
use std::sync::{Arc, Mutex};

/// Appends the name of every hook call to a shared log.
struct Recorder {
    log: Arc<Mutex<Vec<String>>>,
    tag: &'static str,
}

impl Strategy<B, Model> for Recorder {
    fn name(&self) -> &str {
        self.tag
    }
    fn before_experience(&mut self, cx: &mut Context<'_, B, Model>) -> cpt_continual::Result<()> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:before:{}", self.tag, cx.experience));
        Ok(())
    }
    fn after_step(&mut self, cx: &mut Context<'_, B, Model>) -> cpt_continual::Result<()> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:step:{}", self.tag, cx.global_step));
        Ok(())
    }
    fn after_experience(&mut self, cx: &mut Context<'_, B, Model>) -> cpt_continual::Result<()> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:after:{}", self.tag, cx.experience));
        Ok(())
    }
}

#[test]
fn hooks_run_in_order_for_every_strategy() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let strategies: Vec<Box<dyn cpt_continual::Strategy<B, Model>>> = vec![
        Box::new(Recorder {
            log: log.clone(),
            tag: "a",
        }),
        Box::new(Recorder {
            log: log.clone(),
            tag: "b",
        }),
    ];
    let mut t = trainer(1, strategies, 0);
    assert_eq!(t.run(&mut SilentObserver).unwrap(), RunOutcome::Finished);
    let log = log.lock().unwrap();
    let mut expected = Vec::new();
    let mut global = 0;
    for (e, steps) in STEPS.iter().enumerate() {
        expected.extend([format!("a:before:{e}"), format!("b:before:{e}")]);
        for _ in 0..*steps {
            global += 1;
            expected.extend([format!("a:step:{global}"), format!("b:step:{global}")]);
        }
        expected.extend([format!("a:after:{e}"), format!("b:after:{e}")]);
    }
    assert_eq!(*log, expected);
}

#[test]
fn replay_fills_its_share_of_the_batch_from_past_items() {
    let mut replay: Replay<TokenSequence> = Replay::new(4, 0.5, 3);
    let reserve = |r: &Replay<TokenSequence>| {
        <Replay<TokenSequence> as Strategy<B, Model>>::reserved_slots(r, 4)
    };
    // Empty buffer: nothing reserved, the whole batch is fresh, and it is offered to the buffer.
    assert_eq!(reserve(&replay), 0);
    let fresh: Vec<ItemOf<B, Model>> = vec![
        vec![1].into(),
        vec![2].into(),
        vec![3].into(),
        vec![4].into(),
    ];
    let mut batch = fresh.clone();
    <Replay<TokenSequence> as Strategy<B, Model>>::extend_batch(&mut replay, 4, &fresh, &mut batch);
    assert_eq!(batch.len(), 4);
    assert_eq!(replay.buffer().len(), 4);
    // Now half the batch is replayed from those past items.
    assert_eq!(reserve(&replay), 2);
    let fresh2: Vec<TokenSequence> = vec![vec![5].into(), vec![6].into()];
    let mut batch = fresh2.clone();
    <Replay<TokenSequence> as Strategy<B, Model>>::extend_batch(
        &mut replay,
        4,
        &fresh2,
        &mut batch,
    );
    assert_eq!(batch.len(), 4);
    assert!(
        batch[2..].iter().all(|item| item.tokens[0] <= 4),
        "replayed items come from the past: {batch:?}"
    );
    assert_eq!(replay.buffer().seen(), 6);
}
