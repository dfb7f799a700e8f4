// dtk prove's page: filters, sorting, one cell's details (no network).
const D=JSON.parse(document.getElementById('data').textContent);
const sev=D.severity;
function q(s){return document.querySelectorAll(s)}
function apply(){
 const m=document.getElementById('fm').value.toLowerCase(),
  l=document.getElementById('fl').value,f=document.getElementById('ff').value;
 const cols=new Set();
 D.kernels.forEach((k,i)=>{if((!l||k.line===l)&&(!f||k.flavour===f))cols.add(i)});
 q('[data-col]').forEach(e=>e.classList.toggle('hidden',!cols.has(+e.dataset.col)));
 q('tbody tr').forEach(r=>r.classList.toggle('hidden',!!m&&!r.dataset.row.toLowerCase().includes(m)));
 const h=new URLSearchParams();if(m)h.set('module',m);if(l)h.set('line',l);if(f)h.set('flavour',f);
 history.replaceState(null,'','#'+h.toString());
 document.getElementById('shown').textContent=
  q('tbody tr:not(.hidden)').length+' module(s) \u00d7 '+cols.size+' kernel(s) shown';
}
function sortBy(col){
 const tb=document.querySelector('tbody'),rows=[...tb.rows];
 const key=r=>col<0?r.dataset.row:String(9-sev.indexOf(r.cells[col+1].dataset.v||'none')).padStart(2,'0')+r.dataset.row;
 const dir=tb.dataset.sort===String(col)?-1:1;tb.dataset.sort=dir>0?String(col):'';
 rows.sort((a,b)=>key(a)<key(b)?-dir:key(a)>key(b)?dir:0).forEach(r=>tb.appendChild(r));
}
function esc(s){return String(s).replace(/[&<>]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]))}
function show(id){
 const c=D.cells[id],p=document.getElementById('detail');
 let h='<button onclick="this.parentNode.classList.add(\'hidden\')">close</button>'+
  '<h2>'+esc(c.row)+' on '+esc(c.kernel)+'</h2><p>image '+esc(c.image)+
  (c.built_for?' (built for '+esc(c.built_for)+')':'')+'<br>build: '+esc(c.build)+
  (c.cached?' (proof from the cache)':'')+'</p>';
 if(c.reasons.length)h+='<h3>why not green</h3><pre>'+esc(c.reasons.join('\n'))+'</pre>';
 if(c.build_tail.length)h+='<h3>build log tail</h3><pre>'+esc(c.build_tail.join('\n'))+'</pre>';
 c.modules.forEach(m=>{h+='<h3>'+esc(m.module)+': check '+esc(m.predicted)+', boot '+
  esc(m.booted)+(m.agrees===false?' — DISAGREE':'')+'</h3><p>'+esc(m.boot_reason||'')+'</p>'+
  (m.load_output?'<pre>'+esc(m.load_output)+'</pre>':'')+
  (m.kernel_log?'<h4>the kernel\'s words</h4><pre>'+esc(m.kernel_log)+'</pre>':'')+
  (m.log?'<p>log: '+esc(m.log)+'</p>':'')});
 p.innerHTML=h;p.classList.remove('hidden');
}
document.addEventListener('click',e=>{const t=e.target.closest('td.c');if(t&&t.dataset.id)show(t.dataset.id);
 const s=e.target.closest('thead th');if(s)sortBy(+s.dataset.sort)});
['fm','fl','ff'].forEach(i=>document.getElementById(i).addEventListener('input',apply));
const h=new URLSearchParams(location.hash.slice(1)||location.search.slice(1));
document.getElementById('fm').value=h.get('module')||'';
document.getElementById('fl').value=h.get('line')||'';
document.getElementById('ff').value=h.get('flavour')||'';
apply();
