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
///
/// Hooks run in the order the callbacks are passed: put the ones that set metrics (`evaluate`)
/// first and the ones that print (`progress_bar`) last.
#pragma once

#include <dho2/callbacks/csv_history.hpp>
#include <dho2/callbacks/early_stop.hpp>
#include <dho2/callbacks/evaluate.hpp>
#include <dho2/callbacks/events.hpp>
#include <dho2/callbacks/progress_bar.hpp>
#include <dho2/callbacks/stop_on_signal.hpp>
