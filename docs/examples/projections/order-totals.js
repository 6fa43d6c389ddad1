// Per customer: how many orders, how many cancelled, and the total still owed.
// One state per customer (partitionBy); events without a customer are skipped.
fromCategory('order')
  .partitionBy(event => event.data.customer)
  .when({
    $init: () => ({ orders: 0, cancelled: 0, total: 0 }),
    OrderPlaced: (state, event) => {
      state.orders += 1;
      state.total += event.data.total;
      return state;
    },
    OrderCancelled: (state, event) => {
      state.cancelled += 1;
      state.total -= event.data.total;
      return state;
    },
  });
