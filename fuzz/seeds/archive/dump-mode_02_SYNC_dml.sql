------------------------------------------------------------------
-- Slony-I log shipping archive
-- Node 1, Event 5000000027
------------------------------------------------------------------
set session_replication_role to replica;
start transaction;
select "_lab".archiveTracking_offline('7', '2026-11-21 22:06:31.073844+00');
-- end of log archiving header
------------------------------------------------------------------
-- start of Slony-I data
------------------------------------------------------------------
COPY "_lab"."sl_log_archive" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;
1	854	1	1	s1	t1	I	0	{id,4,txt,"it's \t tab \n nl \\\\ bs é ☃ 𝄞 \\"q\\" 1",num,1.25,ts,"2026-11-21 22:06:29.575118+00",b,"\\\\x00ff10",big,NULL}
1	854	1	2	s1	t1	I	0	{id,5,txt,"it's \t tab \n nl \\\\ bs é ☃ 𝄞 \\"q\\" 2",num,2.50,ts,"2026-11-21 22:06:29.575118+00",b,"\\\\x00ff10",big,NULL}
1	854	1	3	s1	t1	I	0	{id,6,txt,"it's \t tab \n nl \\\\ bs é ☃ 𝄞 \\"q\\" 3",num,3.75,ts,"2026-11-21 22:06:29.575118+00",b,"\\\\x00ff10",big,NULL}
1	854	1	4	s1	t1	I	0	{id,7,txt,"it's \t tab \n nl \\\\ bs é ☃ 𝄞 \\"q\\" 4",num,5.00,ts,"2026-11-21 22:06:29.575118+00",b,"\\\\x00ff10",big,NULL}
1	854	1	5	s1	t1	I	0	{id,8,txt,"it's \t tab \n nl \\\\ bs é ☃ 𝄞 \\"q\\" 5",num,6.25,ts,"2026-11-21 22:06:29.575118+00",b,"\\\\x00ff10",big,NULL}
1	854	1	6	s1	t1	I	0	{id,9,txt,"it's \t tab \n nl \\\\ bs é ☃ 𝄞 \\"q\\" 6",num,7.50,ts,"2026-11-21 22:06:29.575118+00",b,"\\\\x00ff10",big,NULL}
1	854	1	7	s1	t1	I	0	{id,10,txt,"it's \t tab \n nl \\\\ bs é ☃ 𝄞 \\"q\\" 7",num,8.75,ts,"2026-11-21 22:06:29.575118+00",b,"\\\\x00ff10",big,NULL}
1	855	2	8	s1	t2	I	0	{k,k101,v,1,arr,"{1,1,NULL}",j,"{\\"a\\": \\"b\\\\\\"c\\\\\\\\d\\", \\"n\\": null, \\"r\\": 1}"}
1	855	2	9	s1	t2	I	0	{k,k102,v,2,arr,"{2,1,NULL}",j,"{\\"a\\": \\"b\\\\\\"c\\\\\\\\d\\", \\"n\\": null, \\"r\\": 1}"}
1	855	2	10	s1	t2	I	0	{k,k103,v,3,arr,"{3,1,NULL}",j,"{\\"a\\": \\"b\\\\\\"c\\\\\\\\d\\", \\"n\\": null, \\"r\\": 1}"}
1	855	2	11	s1	t2	I	0	{k,k104,v,4,arr,"{4,1,NULL}",j,"{\\"a\\": \\"b\\\\\\"c\\\\\\\\d\\", \\"n\\": null, \\"r\\": 1}"}
1	855	2	12	s1	t2	I	0	{k,k105,v,5,arr,"{5,1,NULL}",j,"{\\"a\\": \\"b\\\\\\"c\\\\\\\\d\\", \\"n\\": null, \\"r\\": 1}"}
1	856	3	13	s1	t3	I	0	{a,1,b,1,payload,pppppppppp}
1	856	3	14	s1	t3	I	0	{a,1,b,2,payload,pppppppppppppppppppp}
1	856	3	15	s1	t3	I	0	{a,1,b,3,payload,pppppppppppppppppppppppppppppp}
1	856	3	16	s1	t3	I	0	{a,1,b,4,payload,pppppppppppppppppppppppppppppppppppppppp}
1	857	1	17	s1	t1	U	1	{txt,NULL,id,1}
1	857	1	18	s1	t1	U	1	{txt,NULL,id,6}
1	858	2	19	s1	t2	D	0	{k,k103}
1	859	3	20	s1	t3	U	1	{b,1002,a,1,b,2}
1	860	4	21	s1	t4	I	0	{id,10,MixedCase,"row 1: Ünïcødé \\\\N not null, \\"dq\\" 'sq'",order,2000-01-02,"sp ace",0.3333333333333333,flag,f,iv,01:00:00,u,c4ca4238-a0b9-2382-0dcc-509a6f75849b}
1	860	4	22	s1	t4	I	0	{id,11,MixedCase,NULL,order,NULL,"sp ace",NULL,flag,NULL,iv,NULL,u,NULL}
1	860	4	23	s1	t4	U	2	{MixedCase,"line1\nline2\r\n1","sp ace",-1e-10,id,1}
\.
select "_lab".sequenceSetValue_offline('s1','seq1','2');

select "_lab".sequenceSetValue_offline('s1','seq2','107');

select "_lab".sequenceSetValue_offline('s1','t1_id_seq','10');


------------------------------------------------------------------
-- End Of Archive Log
------------------------------------------------------------------
commit;
vacuum analyze "_lab".sl_archive_tracking;
