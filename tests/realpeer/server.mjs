// The real @ikenxuan/amagi server (pinned in package.json), for the test suite's real-peer tier.
//
//   node server.mjs DOUYIN_BASE      e.g. node server.mjs http://127.0.0.1:40123
//
// amagi runs unmodified: its own startServer(), routes, validation, signing and error handling.
// Only its HTTP transport is redirected, through the axios `adapter` option amagi passes to
// every request: a request for a Douyin host goes to DOUYIN_BASE (same path and query) through
// axios's own http adapter; a request for any other host fails, so no test reaches the internet.
//
// startServer(port) listens on "::" (all interfaces) and returns no server handle, so the one
// listen() it makes is redirected to 127.0.0.1 on a free port. When the server is listening
// this prints one line `AMAGI_LISTENING <port>` on stdout (amagi's own log follows, also on
// stdout), and it exits when stdin closes, so it never outlives the test session that
// started it.
import http from 'node:http';

import amagi from '@ikenxuan/amagi';
// amagi's own axios module (the package re-exports its dependency), so the adapter is the one
// amagi's requests go through.
import axios, { AxiosError } from '@ikenxuan/amagi/axios';

const douyinBase = new URL(process.argv[2] ?? '');
const DOUYIN_HOST = /(^|\.)(douyin|iesdouyin)\.com$/;
const httpAdapter = axios.getAdapter('http');

function adapter(config) {
  const target = new URL(config.url, config.baseURL);
  if (!DOUYIN_HOST.test(target.hostname)) {
    return Promise.reject(
      new AxiosError(`test transport: ${target.host} is not a Douyin host`, 'ENETUNREACH', config),
    );
  }
  const url = new URL(target.pathname + target.search, douyinBase);
  // The stand-in learns which Douyin host amagi meant from this header.
  const headers = axios.AxiosHeaders.from(config.headers).set('X-Douyin-Host', target.host);
  return httpAdapter({ ...config, baseURL: undefined, url: url.href, headers });
}

const ownListen = http.Server.prototype.listen;
const listening = new Promise((resolve, reject) => {
  http.Server.prototype.listen = function listenOnLoopback(...args) {
    http.Server.prototype.listen = ownListen; // only amagi's one call is redirected
    this.once('listening', () => resolve(this));
    this.once('error', reject);
    const callback = args.find((arg) => typeof arg === 'function');
    return ownListen.call(this, 0, '127.0.0.1', callback);
  };
});

amagi({ cookies: { douyin: 'test-cookie-not-a-real-one' }, request: { adapter } }).startServer(0);
const server = await listening;
process.stdout.write(`AMAGI_LISTENING ${server.address().port}\n`);

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
