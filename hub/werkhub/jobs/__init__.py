"""Scheduled notebook jobs: definitions (spec, cron, params, paths) and execution (runner,
report, execute, containers, docker_runner). Submodules are imported explicitly; this
package imports nothing so that the pure modules stay light."""
