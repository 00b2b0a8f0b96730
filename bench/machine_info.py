"""What the benchmark reports say about the machine they ran on (shared by the compare scripts)."""
import os
import platform


def load_average():
    """The 1-minute load average (NaN where the OS does not report it)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else whatever platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
