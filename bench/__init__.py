# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmarks and the tools they share (run each as ``python bench/NAME.py``).

A package so that tests can import its tools, e.g. ``from bench.mdm_receiver import MdmReceiver``.
"""
