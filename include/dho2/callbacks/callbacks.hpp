/// @file
/// The callbacks umbrella: the event protocol of `optimizer::optimize` and the shipped
/// callbacks.
///
/// | callback             | hooks                       | does                                   |
/// |----------------------|-----------------------------|----------------------------------------|
/// | `evaluate`           | `on_epoch_end`              | sets a metric computed from parameters |
/// | `early_stop_at`      | `on_begin`, `on_epoch_end`  | stops when a metric reaches a target   |
/// | `csv_history`        | `on_epoch_end`              | one CSV row per epoch                  |
/// | `progress_bar`       | all four                    | live bar on a terminal, lines elsewhere|
/// | `stop_on_signal`     | `on_step`, `stop_reason`    | stops cleanly on SIGINT / SIGTERM      |
/// | `early_stopping`     | `on_begin`, `on_epoch_end`  | stops when a metric stops improving    |
/// | `keep_best`          | `on_begin`, `on_epoch_end`  | keeps x at the best metric (`restore`) |
/// | `time_budget`        | `on_step`, `stop_reason`    | stops once a wall-clock budget is used |
/// | `lr_schedule`        | `on_begin`, `on_step`       | sets the learning rate of each step    |
///
/// `lr_schedule` applies `step_decay`, `cosine_annealing`, `linear_warmup` or `warmup_then`;
/// `hand_loop` drives any of these callbacks from a loop that calls `step` itself. Gradient-norm
/// clipping is an option (`options::max_gradient_norm`), not a callback: it acts inside the step.
///
/// Hooks run in the order the callbacks are passed: put the ones that set metrics (`evaluate`)
/// first and the ones that print (`progress_bar`) last.
#pragma once

#include <dho2/callbacks/csv_history.hpp>
#include <dho2/callbacks/early_stop.hpp>
#include <dho2/callbacks/evaluate.hpp>
#include <dho2/callbacks/events.hpp>
#include <dho2/callbacks/hand_loop.hpp>
#include <dho2/callbacks/keep_best.hpp>
#include <dho2/callbacks/lr_schedule.hpp>
#include <dho2/callbacks/progress_bar.hpp>
#include <dho2/callbacks/stop_on_signal.hpp>
#include <dho2/callbacks/time_budget.hpp>
