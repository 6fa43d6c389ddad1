// A read model (CQRS) over `order-*` streams, with schema evolution (docs/guide.md):
// OrderPlaced version 1 had `amount` (units); version 2 (metadata.schema_version = 2) has
// `total_cents`. The upcaster turns version 1 into version 2 before partitionBy and the
// handler, so the handler knows one shape. Stored events are never rewritten.
fromCategory('order')
  .upcast({
    OrderPlaced: {
      1: (e) => ({ customer: e.data.customer, total_cents: Math.round(e.data.amount * 100) }),
    },
  })
  .partitionBy((e) => e.data.customer)
  .when({
    $init: () => ({ orders: 0, total_cents: 0 }),
    OrderPlaced: (s, e) => {
      s.orders += 1;
      s.total_cents += e.data.total_cents;
      return s;
    },
  });
