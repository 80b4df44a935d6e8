"""The one training loop: periods run in order, callbacks see every hook, a callback can stop it."""

from retrain.train.callbacks import KeepBest, StepProgress
from retrain.train.learner import Callback, Learner
from retrain.train.top_layer import StepReport


class _Trace(Callback):
    def __init__(self, events: list):
        self.events = events

    def on_fit_begin(self, model) -> None:
        self.events.append(("begin", model))

    def on_period_begin(self, period) -> None:
        self.events.append(("period", period))

    def on_batch_end(self, step: int, size: int) -> None:
        self.events.append(("batch", step, size))

    def on_period_end(self, result, state) -> None:
        self.events.append(("end", result))

    def on_fit_end(self, results) -> None:
        self.events.append(("done", list(results)))


def _learner(callbacks, batches_per_period=2):
    def train(period, on_batch):
        for index in range(batches_per_period):
            on_batch(period * batches_per_period + index, 8)
        return period * 10

    return Learner(train, lambda period, trained, seconds: trained + 1, callbacks)


def test_callbacks_see_each_period_its_batches_and_the_results_in_order():
    events = []
    results = _learner([_Trace(events)]).fit([0, 1], model="net")
    assert results == [1, 11]
    assert events == [("begin", "net"), ("period", 0), ("batch", 0, 8), ("batch", 1, 8), ("end", 1),
                      ("period", 1), ("batch", 2, 8), ("batch", 3, 8), ("end", 11), ("done", [1, 11])]


def _report(step: int, auc: float) -> StepReport:
    return StepReport(step, 0.5, 1.0, 0.5, 10, validation_auc=auc, validation_loss=1 - auc)


def test_keep_best_stops_after_patience_validations_without_a_better_one():
    aucs = [0.6, 0.8, 0.7, 0.75, 0.9]
    keep = KeepBest("auc", lambda report: report.step, patience=2)
    learner = Learner(lambda period, on_batch: None, lambda period, trained, seconds: _report(period, aucs[period]),
                      [keep])
    results = learner.fit(range(len(aucs)))
    assert [r.step for r in results] == [0, 1, 2, 3]  # 0.9 at step 4 is never reached
    assert (keep.at, keep.kept, keep.score) == (1, 1, 0.8)


def test_keep_best_by_loss_prefers_the_lower_loss_and_ties_go_to_the_later_when_asked():
    earlier = KeepBest("loss", lambda report: report.step)
    later = KeepBest("loss", lambda report: report.step, later_wins_ties=True)
    fit = Learner(lambda period, on_batch: None, lambda period, trained, seconds: _report(period, [0.7, 0.9, 0.9][period]),
                  [earlier, later]).fit
    fit(range(3))
    assert earlier.at == 1 and later.at == 2


def test_step_progress_fills_the_steps_an_early_stop_skipped():
    updates = []
    progress = StepProgress(updates.append, steps=10)

    class _StopAfterFirst(Callback):
        def on_period_end(self, result, state) -> None:
            state.stop = True

    _learner([progress, _StopAfterFirst()], batches_per_period=3).fit([0, 1, 2])
    assert updates == [1, 1, 1, 7]
