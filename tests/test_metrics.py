"""The metric writers' inputs: the peak FLOP/s that MFU divides by."""

import json

from tinyscale.train import metrics


def test_a_measured_peak_is_kept_for_the_machine_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "_measured", {})
    measured = metrics.peak_flops(0.0, str(tmp_path))  # the real measurement
    assert 1e8 < measured < 1e14
    kept = json.loads((tmp_path / metrics.PEAKS_FILE).read_text())
    (key, value), = kept.items()
    assert value == measured and "cpu" in key and "cores" in key
    # another process on this machine: reads the kept peak, measures nothing
    monkeypatch.setattr(metrics, "_measured", {})
    monkeypatch.setattr(metrics, "measure_matmul_peak", lambda: 1 / 0)
    (tmp_path / metrics.PEAKS_FILE).write_text(json.dumps({key: 7e10}))
    assert metrics.peak_flops(0.0, str(tmp_path)) == 7e10
    assert metrics.peak_flops(3e9, str(tmp_path)) == 3e9  # configured: always that


def test_an_unreadable_peak_file_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "_measured", {})
    monkeypatch.setattr(metrics, "measure_matmul_peak", lambda: 4e10)
    (tmp_path / metrics.PEAKS_FILE).write_text("{not json")
    assert metrics.peak_flops(0.0, str(tmp_path)) == 4e10
    assert list(json.loads((tmp_path / metrics.PEAKS_FILE).read_text()).values()) == [4e10]
