"""One module per kind of source; :func:`jaxcnn.data.load` dispatches to them."""
