"""The control plane: how operators in other shells see and steer a running pipeline, through
a table in the pipeline's own PostgreSQL (`veltrix_control`)."""

from veltrix_ray.control.plane import ControlPlane, ControlRow, Requests, running
from veltrix_ray.control.steering import Steering

__all__ = ["ControlPlane", "ControlRow", "Requests", "Steering", "running"]
