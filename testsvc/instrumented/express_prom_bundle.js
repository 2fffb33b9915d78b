'use strict';
// express + express-prom-bundle (+ prom-client) test service.
// Options as asked: metricsPath /metrics, includeMethod, includePath, includeStatusCode;
// everything else left at express-prom-bundle defaults (histogram, buckets, includeUp, no default process metrics).
const express = require('express');
const promBundle = require('express-prom-bundle');

const PORT = parseInt(process.env.PORT || '8000', 10);
// Every ERROR_EVERY-th /login answers 500 (0: none): an exact error rate the tests compare to.
const ERROR_EVERY = parseInt(process.env.ERROR_EVERY || '20', 10);
let logins = 0;

const app = express();
app.use(promBundle({
  metricsPath: '/metrics',
  includeMethod: true,
  includePath: true,
  includeStatusCode: true,
}));

app.get('/health', (req, res) => res.status(200).json({ status: 'healthy' }));

app.get('/login', (req, res) => {
  setTimeout(() => {
    logins += 1;
    if (ERROR_EVERY && logins % ERROR_EVERY === 0) res.status(500).json({ status: 'error' });
    else res.status(200).json({ status: 'ok' });
  }, 20);
});

app.listen(PORT, '127.0.0.1', () => console.log(`express-prom-bundle service on 127.0.0.1:${PORT}`));
