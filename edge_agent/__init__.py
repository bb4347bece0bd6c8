"""Streaming anomaly detection on the edge: a stateful int8 LSTM over MQTT sensor streams.

The agent side never imports TensorFlow: it needs numpy, paho-mqtt, PyYAML, pydantic and a
LiteRT runtime (``ai-edge-litert`` or ``tflite-runtime``).
"""

__version__ = "0.1.0"
