"""The built-in ultralytics plugin: detectors, model preparation, loading and saving.

Registered only when ultralytics is installed. Importing this module does not import
ultralytics; each hook does so when called.
"""
