"""The Keras adapter: thin glue between Keras and the engine / decision layers."""
