// A process manager: once an order is placed and paid in full, ask for it to be shipped,
// exactly once. One state per order stream (foreachStream); the follow-up events go to the
// `shipping` stream, which is outside the `order` category this projection reads.
function shipWhenReady(state, event) {
  if (state.placed && !state.shipped && state.paid >= state.total) {
    emit('shipping', 'ShipOrder', { order: event.stream, total: state.total });
    state.shipped = true;
  }
  return state;
}

fromCategory('order')
  .foreachStream()
  .when({
    $init: () => ({ placed: false, total: 0, paid: 0, shipped: false }),
    OrderPlaced: (state, event) => {
      state.placed = true;
      state.total = event.data.total;
      return shipWhenReady(state, event);
    },
    PaymentReceived: (state, event) => {
      state.paid += event.data.amount;
      return shipWhenReady(state, event);
    },
  });
