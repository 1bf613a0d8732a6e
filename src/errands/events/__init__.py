"""Publishing record changes and wake-ups between processes.

Two kinds of message travel here: *worker* messages (new work is queued; cancel these
running tasks) and *change* messages (these records now have these versions). They are
hints: every subscriber also polls at a slow interval, so a lost message delays
something, never loses it.
"""

from .notifier import LocalNotifier, Notifier, Subscription, notifier_for

__all__ = ["LocalNotifier", "Notifier", "Subscription", "notifier_for"]
