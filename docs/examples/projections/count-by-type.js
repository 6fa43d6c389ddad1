// Counts the events of every user stream, in total and by event type.
fromAll()
  .when({
    $init: () => ({ total: 0, byType: {} }),
    $any: (state, event) => {
      state.total += 1;
      state.byType[event.type] = (state.byType[event.type] || 0) + 1;
      return state;
    },
  });
