------------------------------------------------------------------
-- Slony-I log shipping archive
-- Node 1, Event 5000000059
------------------------------------------------------------------
set session_replication_role to replica;
start transaction;
select "_lab".archiveTracking_offline('7', '2026-11-21 22:06:41.32022+00');
-- end of log archiving header
------------------------------------------------------------------
-- start of Slony-I data
------------------------------------------------------------------
COPY "_lab"."sl_log_archive" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;
1	1215	\N	1393	\N	\N	S	\N	{"-- a comment line in the script\ncreate table s1.t6 (id int primary key, v text);","","1,1,31,2,1,310,3,1,214"}
1	1215	\N	1394	\N	\N	S	\N	{"\ncreate or replace function s1.f(x int) returns int language plpgsql as $$\nbegin\n  return x + 1;   -- a semicolon; inside the body\nend;\n$$;","",""}
1	1215	\N	1395	\N	\N	S	\N	{"\ncomment on table s1.t2 is 'it''s commented; with a semicolon';","",""}
1	1215	\N	1396	\N	\N	S	\N	{"\nalter table s1.t4 add column added_later numeric(10,2) default 3.14;","",""}
1	1215	\N	1397	\N	\N	S	\N	{"\n","",""}
1	1215	\N	1398	\N	\N	s	\N	{}
1	1217	4	1399	s1	t4	I	0	{id,9999,MixedCase,NULL,order,NULL,"sp ace",NULL,flag,NULL,iv,NULL,u,NULL,added_later,1.50}
\.
select "_lab".sequenceSetValue_offline('s1','t1_id_seq','214');


------------------------------------------------------------------
-- End Of Archive Log
------------------------------------------------------------------
commit;
vacuum analyze "_lab".sl_archive_tracking;
