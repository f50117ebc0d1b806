// `npm run build` of exercise 6.2: renders the page that the production stage serves.
const fs = require('fs');
const { greet } = require('./src/greet');

fs.mkdirSync('dist', { recursive: true });
fs.writeFileSync('dist/index.html', `<h1>${greet('multi-stage')}</h1>\n`);
console.log('Built dist/index.html');
