// Preloaded (node --require) into the reference server by the benchmark: that server listens
// on 0.0.0.0, hard-coded, and the benchmark keeps every socket on loopback.
const net = require('net');

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (port, host, ...rest) {
    return listen.call(this, port, host === '0.0.0.0' ? '127.0.0.1' : host, ...rest);
};
